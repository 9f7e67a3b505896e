// The node's fabric identity on the data channel. A node's TLS key is its libp2p Ed25519
// identity key itself, in a self-signed certificate made at start-up: the TLS 1.3
// handshake (CertificateVerify) then proves that each side holds the key of the peer ID it
// claims, with no certificate authority and no second key to manage. In plaintext mode the
// same key signs the handshake transcript instead.

import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject, type X509Certificate } from 'node:crypto'

import { createSecureContext, type SecureContext } from 'node:tls'

import { publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { NaiadError } from '@naiad/proto'

export interface NodeIdentity {
  peerId: string
  /**
   * The client-side TLS context of the identity (key, certificate, TLS 1.3 only, cipher
   * preference), made once: building it from PEM per connection cost more than the
   * handshake. (A server takes key and certificate as options: a server given only a
   * context finds no signature algorithm for the Ed25519 key.)
   */
  tls: SecureContext
  /** The identity key as a Node key object (plaintext signatures). */
  key: KeyObject
  /** The identity key in PKCS#8 PEM (the TLS key). */
  keyPem: string
  /** A self-signed X.509 certificate (PEM) of the identity key. */
  cert: string
}

const b64url = (b: Uint8Array): string => Buffer.from(b).toString('base64url')

/**
 * TLS 1.3 suites in order of preference: AES-128-GCM first (with AES-NI it encrypts a
 * piece for about two thirds of AES-256-GCM's CPU, at a security margin far beyond what
 * piece bytes need), then AES-256-GCM and ChaCha20-Poly1305 for peers that insist.
 */
export const TLS_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256'

export function nodeIdentity(privateKey: PrivateKey): NodeIdentity {
  if (privateKey.type !== 'Ed25519') {
    throw new NaiadError('PROTO_ERR_BAD_CONFIG', `the data channel needs an Ed25519 identity key, not ${privateKey.type}`)
  }
  const raw = privateKey.raw // 32-byte seed, then the 32-byte public key
  const key = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: b64url(raw.subarray(0, 32)), x: b64url(raw.subarray(32, 64)) }, format: 'jwk' })
  const peerId = peerIdFromPublicKey(privateKey.publicKey).toString()
  const keyPem = key.export({ type: 'pkcs8', format: 'pem' }) as string
  const cert = selfSignedCertificate(key, peerId)
  return { peerId, key, keyPem, cert, tls: createSecureContext({ key: keyPem, cert, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS }) }
}

/** Peer IDs of certificates seen (DER, base64 → peer ID), at most MAX_KNOWN_CERTIFICATES. */
const knownCertificates = new Map<string, string>()
const MAX_KNOWN_CERTIFICATES = 1024

/**
 * The peer ID whose key is the one in `cert` (the other side of a TLS connection). Each
 * peer's certificate comes back on every connection with it (two per pair of peers, one
 * each way): the peer ID is derived once (key export, protobuf, multihash and base58 in
 * code that runs too rarely to be optimised cost about as much as the handshake's verification).
 */
export function peerIdOfCertificate(cert: X509Certificate): string {
  const der = cert.raw.toString('base64')
  let peerId = knownCertificates.get(der)
  if (peerId === undefined) {
    peerId = derivePeerId(cert)
    if (knownCertificates.size >= MAX_KNOWN_CERTIFICATES) knownCertificates.clear()
    knownCertificates.set(der, peerId)
  }
  return peerId
}

function derivePeerId(cert: X509Certificate): string {
  const jwk = cert.publicKey.export({ format: 'jwk' })
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || jwk.x === undefined) {
    throw new NaiadError('PROTO_ERR_DECODE', 'the peer\'s certificate does not hold an Ed25519 key')
  }
  return peerIdFromPublicKey(publicKeyFromRaw(Buffer.from(jwk.x, 'base64url'))).toString()
}

/** The Ed25519 public key a peer ID embeds, as a Node key object. */
export function publicKeyOfPeer(peerId: string): KeyObject {
  const pub = peerIdFromString(peerId).publicKey
  if (pub?.type !== 'Ed25519') throw new NaiadError('PROTO_ERR_DECODE', `peer ID ${peerId} does not embed an Ed25519 key`)
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(pub.raw) }, format: 'jwk' })
}

export function signWith(identity: NodeIdentity, data: Uint8Array): Uint8Array {
  return sign(null, data, identity.key)
}

export function verifyPeerSignature(peerId: string, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    return verify(null, data, publicKeyOfPeer(peerId), signature)
  } catch {
    return false
  }
}

// --- a minimal DER encoder, enough for one self-signed Ed25519 certificate -----------------

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n])
  const bytes: number[] = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff)
  return Buffer.from([0x80 | bytes.length, ...bytes])
}

function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts)
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body])
}

const sequence = (...parts: Buffer[]): Buffer => tlv(0x30, ...parts)
const integer = (b: Buffer): Buffer => tlv(0x02, (b[0] & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), b]) : b)
const oid = (hex: string): Buffer => tlv(0x06, Buffer.from(hex, 'hex'))
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'))
const generalizedTime = (d: Date): Buffer => tlv(0x18, Buffer.from(`${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`))
const bitString = (b: Buffer): Buffer => tlv(0x03, Buffer.from([0]), b)

const ED25519_ALGORITHM = sequence(oid('2b6570')) // 1.3.101.112
const COMMON_NAME = '550403' // 2.5.4.3

/**
 * A positive 64-bit serial in minimal DER: a first byte of 0 would be an illegal padding
 * (OpenSSL refuses such a certificate), one of 0x80 or more a negative number.
 */
function serialNumber(): Buffer {
  const b = randomBytes(8)
  b[0] = (b[0] & 0x7f) | 0x01
  return b
}

/**
 * An X.509 v3 certificate of `key`, signed by itself, naming the peer ID. Peers never check
 * its dates or issuer: what counts is the key, which the TLS handshake proves.
 */
function selfSignedCertificate(key: KeyObject, peerId: string): string {
  const name = sequence(tlv(0x31, sequence(oid(COMMON_NAME), utf8(peerId))))
  const now = Date.now()
  const tbs = sequence(
    tlv(0xa0, integer(Buffer.from([2]))), // v3
    integer(serialNumber()),
    ED25519_ALGORITHM,
    name,
    sequence(generalizedTime(new Date(now - 3_600_000)), generalizedTime(new Date(now + 20 * 365 * 86_400_000))),
    name,
    createPublicKey(key).export({ type: 'spki', format: 'der' })
  )
  const der = sequence(tbs, ED25519_ALGORITHM, bitString(sign(null, tbs, key)))
  const lines = der.toString('base64').match(/.{1,64}/g) ?? []
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`
}
