import { inspect } from 'node:util';

/**
 * A secret value (token, code, verifier, client secret) that travels through the code wrapped,
 * so that JSON.stringify, util.inspect, template strings and pino all print `[redacted]`.
 * Only `reveal()` gives the value, and only at the edge that must send it.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  get length(): number {
    return this.#value.length;
  }

  toString(): string {
    return '[redacted]';
  }

  toJSON(): string {
    return '[redacted]';
  }

  [inspect.custom](): string {
    return '[redacted]';
  }
}
