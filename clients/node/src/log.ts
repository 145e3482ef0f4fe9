/**
 * The logger the worker reports to. Pass `console` (or a pino/winston logger) to see
 * everything; the default prints warnings and errors to stderr and drops the rest, like a
 * Python library whose logger nobody configured.
 */

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

const ignore = (): void => {};

export const defaultLogger: Logger = {
  debug: ignore,
  info: ignore,
  warn: (message) => console.error(`dispatchd worker: ${message}`),
  error: (message) => console.error(`dispatchd worker: ${message}`),
};
