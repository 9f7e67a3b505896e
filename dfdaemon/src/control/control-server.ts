// The daemon's side of the control service (`/naiad/control/1.0.0`): the supernode sends a
// named command with JSON arguments, the daemon checks them with the command's parser
// (proto's CONTROL_ARGS, or the one a plugin gave), runs the handler registered under that
// name and answers with its JSON result or a typed error. Only the supernode this daemon is
// attached to may call: the caller is the peer authenticated by the Noise handshake.

import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import type { Logger } from 'pino'
import {
  CONTROL_ARGS, ControlRequest, ControlResponse, LIMITS, NaiadError, PROTOCOLS, toNaiadError,
  type ControlArgs, type ControlCommandName, type FabricNode
} from '@naiad/proto'

import type { ControlHandler } from '../plugin-api/context.ts'

interface Registered {
  run: (args: unknown, signal: AbortSignal) => Promise<unknown>
  parse: ((raw: unknown) => unknown) | undefined
}

export interface ControlServerComponents {
  node: FabricNode
  logger: Logger
  /** The peer ID of the supernode this daemon is attached to; undefined until it is known. */
  supernodeId: () => string | undefined
  /** With several supernodes: whether a peer is one of them (each may send commands). */
  isSupernode?: (peerId: string) => boolean
}

export interface ControlServerOptions {
  /** How long a command may run when the caller names no timeout. */
  defaultTimeoutMs: number
  /** Upper bound on the timeout a caller may ask for. */
  maxTimeoutMs: number
}

export const CONTROL_DEFAULTS: ControlServerOptions = {
  defaultTimeoutMs: LIMITS.controlTimeoutMs,
  maxTimeoutMs: LIMITS.controlMaxTimeoutMs
}

const COMMAND = /^[a-z][a-z0-9._-]{0,63}$/

export class ControlServer {
  private readonly commands = new Map<string, Registered>()
  /** Aborted on stop, so running commands stop waiting. */
  private readonly stopping = new AbortController()
  private readonly inflight = new Set<Promise<void>>()
  private started = false

  private readonly c: ControlServerComponents
  private readonly options: ControlServerOptions

  constructor(components: ControlServerComponents, options: ControlServerOptions = CONTROL_DEFAULTS) {
    this.c = components
    this.options = options
  }

  /** Handles `command`; the returned function stops handling it (it is unknown again). */
  handle<K extends ControlCommandName>(command: K, fn: ControlHandler<K>, parse?: (raw: unknown) => ControlArgs<K>): () => void {
    if (!COMMAND.test(command)) throw new NaiadError('PROTO_ERR_PLUGIN', `bad control command name "${command}": lowercase letters, digits, . _ -`)
    if (this.commands.has(command)) throw new NaiadError('PROTO_ERR_PLUGIN', `control command "${command}" is already handled`)
    const entry: Registered = {
      // The arguments were checked by `parse` before this runs.
      run: (args, signal) => fn(args as ControlArgs<K>, signal),
      parse: parse ?? CONTROL_ARGS[command] as ((raw: unknown) => unknown) | undefined
    }
    this.commands.set(command, entry)
    return () => { if (this.commands.get(command) === entry) this.commands.delete(command) }
  }

  get commandNames(): string[] {
    return [...this.commands.keys()].sort()
  }

  async start(): Promise<void> {
    await this.c.node.handle(PROTOCOLS.control, (stream, connection) => {
      const p = this.serveStream(stream, connection.remotePeer.toString())
      this.inflight.add(p)
      void p.finally(() => this.inflight.delete(p))
    }, { maxInboundStreams: 64 })
    this.started = true
  }

  async stop(): Promise<void> {
    this.stopping.abort(new NaiadError('PROTO_ERR_ABORTED', 'daemon is shutting down'))
    if (this.started) await this.c.node.unhandle(PROTOCOLS.control).catch(() => {})
    await Promise.allSettled([...this.inflight])
  }

  /** Runs one request from `remotePeer`; never throws: failures become a response with ok=false. */
  async dispatch(remotePeer: string, req: ControlRequest, signal: AbortSignal): Promise<Partial<ControlResponse>> {
    const log = this.c.logger.child({ command: req.command, from: remotePeer })
    try {
      const supernode = this.c.supernodeId()
      if (this.c.isSupernode?.(remotePeer) !== true && (supernode === undefined || supernode !== remotePeer)) {
        log.warn('control command from a peer that is not our supernode refused')
        throw new NaiadError('DFD_ERR_CONTROL_FORBIDDEN', supernode === undefined
          ? 'this daemon does not know its supernode yet; control commands are refused'
          : `peer ${remotePeer} is not the supernode this daemon is attached to`)
      }
      const entry = this.commands.get(req.command)
      if (entry === undefined) throw new NaiadError('DFD_ERR_CONTROL_UNKNOWN', `unknown control command "${req.command}" (known: ${this.commandNames.join(', ')})`)
      let args: unknown = undefined
      if (req.argsJson !== '') {
        try {
          args = JSON.parse(req.argsJson) as unknown
        } catch (err) {
          throw new NaiadError('DFD_ERR_BAD_REQUEST', `control command "${req.command}": arguments are not JSON`, { cause: err })
        }
      }
      if (entry.parse !== undefined) args = entry.parse(args)
      const started = Date.now()
      const result = await entry.run(args, signal)
      log.debug({ ms: Date.now() - started }, 'control command done')
      return { ok: true, resultJson: result === undefined ? '' : JSON.stringify(result) }
    } catch (err) {
      // When the wait was cut short, say why (timeout, caller gone, shutdown) rather than how the handler noticed.
      const e = signal.aborted ? timeoutOrAbort(signal, err) : toNaiadError(err, 'PROTO_ERR_REMOTE')
      if (e.code !== 'DFD_ERR_CONTROL_FORBIDDEN') log.info({ code: e.code, err: e.message }, 'control command failed')
      return { ok: false, code: e.code, message: e.message }
    }
  }

  private async serveStream(stream: Stream, remotePeer: string): Promise<void> {
    const lp = lpStream(stream, { maxDataLength: LIMITS.maxMessageBytes })
    // The request must arrive promptly; the command itself may then run much longer.
    const readSignal = AbortSignal.any([AbortSignal.timeout(LIMITS.callTimeoutMs), this.stopping.signal])
    let req: ControlRequest
    try {
      req = ControlRequest.decode((await lp.read({ signal: readSignal })).subarray())
    } catch (err) {
      stream.abort(toNaiadError(err, 'PROTO_ERR_DECODE', 'control request'))
      return
    }
    const timeoutMs = Math.min(req.timeoutMs > 0 ? req.timeoutMs : this.options.defaultTimeoutMs, this.options.maxTimeoutMs)
    // The caller gives up by resetting the stream: stop the command's wait then too.
    const gone = new AbortController()
    const onClose = (): void => gone.abort(new NaiadError('PROTO_ERR_ABORTED', 'the caller closed the control stream'))
    stream.addEventListener('close', onClose, { once: true })
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), gone.signal, this.stopping.signal])
    const reply = await this.dispatch(remotePeer, req, signal)
    stream.removeEventListener('close', onClose)
    if (gone.signal.aborted) return
    try {
      const writeSignal = AbortSignal.timeout(LIMITS.callTimeoutMs)
      await lp.write(ControlResponse.encode(reply), { signal: writeSignal })
      await stream.close({ signal: writeSignal })
    } catch (err) {
      stream.abort(toNaiadError(err, 'PROTO_ERR_ABORTED', 'control response'))
    }
  }
}

function timeoutOrAbort(signal: AbortSignal, cause: unknown): NaiadError {
  const reason = signal.reason as Error | undefined
  if (reason instanceof NaiadError) return reason
  if (reason?.name === 'TimeoutError') return new NaiadError('DFD_ERR_TIMEOUT', 'control command did not finish within its timeout', { cause })
  return new NaiadError('PROTO_ERR_ABORTED', 'control command was aborted', { cause })
}
