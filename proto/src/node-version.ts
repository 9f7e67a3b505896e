// The Node.js floor every binary checks before it loads anything else: 22.18 is the first
// release that runs TypeScript sources without a flag (type stripping), and the oldest the
// binaries are tested on. A binary started on an older Node says so in one line and exits 1,
// instead of failing somewhere inside a dependency. This file imports nothing, so that the
// check itself runs on any Node; the engines fields of the package.json files say the same.

export const NODE_FLOOR = '22.18.0'

/** Whether `version` (`v22.18.0` or `22.18.0`) is at least NODE_FLOOR. */
export function nodeMeetsFloor(version: string, floor = NODE_FLOOR): boolean {
  const have = version.replace(/^v/, '').split('.').map(Number)
  const want = floor.split('.').map(Number)
  for (let i = 0; i < 3; i++) {
    const a = have[i] ?? 0
    const b = want[i] ?? 0
    if (a !== b) return a > b
  }
  return true
}

/** Exits with one clear line when this Node is older than the floor. */
export function checkNode(binary: string, version = process.version): void {
  if (nodeMeetsFloor(version)) return
  process.stderr.write(`${binary}: needs Node.js ${NODE_FLOOR} or newer; this is Node.js ${version} (${process.execPath})\n`)
  process.exit(1)
}
