#!/usr/bin/env node
import { checkNode } from '@naiad/proto/node-version'

checkNode('dfget')

const { main } = await import('@naiad/dfget')
process.exitCode = await main(process.argv.slice(2))
