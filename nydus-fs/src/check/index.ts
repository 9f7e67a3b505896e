export { checkImage, chunkOwners, type CheckOptions, type CheckResult } from './check.ts'
