import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';

/**
 * Which addresses an outbound call to a URL a caller chose may reach. Server-side request forgery
 * (OWASP SSRF prevention cheat sheet): a webhook URL, or anything else a tenant names, must not
 * reach loopback, private, link-local (cloud metadata at 169.254.169.254), shared, multicast or
 * reserved addresses. Names are resolved here and the connection is pinned to the address that was
 * checked, so a DNS answer that changes between check and connect (rebinding) gains nothing.
 */

const NOT_PUBLIC = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  NOT_PUBLIC.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96], // NAT64 can reach any IPv4, private ones included
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001::', 23],
  ['2001:db8::', 32],
  ['2002::', 16], // 6to4 embeds an IPv4 address
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const)
  NOT_PUBLIC.addSubnet(net, prefix, 'ipv6');

// IPv4-mapped IPv6 (::ffff:0:0/96), in its own list: node's BlockList matches IPv4 addresses
// against IPv6 rules through this very mapping, so it cannot sit in NOT_PUBLIC.
const MAPPED = new BlockList();
MAPPED.addSubnet('::ffff:0:0', 96, 'ipv6');

/** True when `address` (an IP literal) is a public unicast address. */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return isPublicAddress(mapped[1]!);
    if (MAPPED.check(address, 'ipv6')) return false; // the hex spelling of a mapped address: refused
    return !NOT_PUBLIC.check(address, 'ipv6');
  }
  return !NOT_PUBLIC.check(address, 'ipv4');
}

export interface ResolvedTarget {
  readonly address: string;
  readonly family: 4 | 6;
}

export class TargetRefusedError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'TargetRefusedError';
  }
}

/**
 * Resolves `hostname` and returns the address to connect to. With `publicOnly`, every address the
 * name resolves to must be public (one private answer among public ones is refused: the resolver
 * could hand it out next time). Rejects TargetRefusedError.
 */
export async function resolveTarget(
  hostname: string,
  publicOnly: boolean,
): Promise<ResolvedTarget> {
  const bare = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  let answers: { address: string; family: number }[];
  if (isIP(bare) !== 0) answers = [{ address: bare, family: isIP(bare) }];
  else {
    try {
      answers = await lookup(bare, { all: true, verbatim: true });
    } catch {
      throw new TargetRefusedError(`the host name does not resolve`);
    }
  }
  if (answers.length === 0) throw new TargetRefusedError('the host name does not resolve');
  if (publicOnly && answers.some((a) => !isPublicAddress(a.address)))
    throw new TargetRefusedError('the host resolves to a loopback, private or reserved address');
  const first = answers[0]!;
  return { address: first.address, family: first.family === 6 ? 6 : 4 };
}
