import { connect, type Socket } from 'node:net';

/** One HTTP/1.1 response read off the wire: status line, headers (lower-cased names), body. */
export interface RawResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/**
 * A raw HTTP/1.1 connection whose bytes we control and whose replies we read as they come: for
 * what a client on the wire sees (partial requests, stalls, resets) that fetch would hide.
 */
export class RawConnection {
  readonly socket: Socket;
  received = '';
  /** The socket error, if any (ECONNRESET, EPIPE, ...). */
  error: NodeJS.ErrnoException | null = null;
  /** Resolves once the socket has closed, for whatever reason. */
  readonly closed: Promise<void>;
  /** Resolves once the TCP connection is established; rejects if it cannot be. */
  readonly connected: Promise<void>;
  #waiters: { text: string; resolve: () => void }[] = [];

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.on('data', (d: Buffer) => {
      this.received += d.toString('latin1');
      this.#waiters = this.#waiters.filter((w) => {
        if (!this.received.includes(w.text)) return true;
        w.resolve();
        return false;
      });
    });
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.connected.catch(() => undefined);
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      this.error ??= err;
    });
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
  }

  /** Resolves once `text` has been received. */
  waitFor(text: string): Promise<void> {
    if (this.received.includes(text)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ text, resolve }));
  }

  /** Writes `data`; rejects with the write error (EPIPE, ECONNRESET, write after end). */
  write(data: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.socket.write(data, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** The complete responses received so far, in order; a truncated last one is left out. */
  responses(): RawResponse[] {
    const out: RawResponse[] = [];
    let rest = this.received;
    for (;;) {
      const end = rest.indexOf('\r\n\r\n');
      if (end < 0) return out;
      const [statusLine, ...lines] = rest.slice(0, end).split('\r\n');
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine ?? '');
      if (!status) return out;
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const code = Number(status[1]);
      // 1xx and 204/304 carry no body; everything this service sends otherwise has a Content-Length.
      const length =
        code < 200 || code === 204 || code === 304 ? 0 : Number(headers['content-length']);
      if (!Number.isInteger(length)) return out;
      if (rest.length < end + 4 + length) return out;
      out.push({ status: code, headers, body: rest.slice(end + 4, end + 4 + length) });
      rest = rest.slice(end + 4 + length);
    }
  }
}

/** Resolves with the connection error code (ECONNREFUSED expected), or 'connected'. */
export function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}
