// comlink over worker_threads: an Endpoint adapter for Worker / MessagePort / parentPort (the
// package's own node adapter has no usable typings under nodenext), and a throw handler that
// keeps an error's kind across the hop: its class (rebuilt from its code), message and fields.

import type { MessagePort, Worker } from 'node:worker_threads';
import * as Comlink from 'comlink';
import { ERROR_CLASSES } from '../errors.js';

type NodePort = Pick<MessagePort | Worker, 'postMessage' | 'on' | 'off'>;
type Listener = Parameters<Comlink.Endpoint['addEventListener']>[1];

/**
 * `afterPost` runs after each message is posted: a device worker busy serving its ring turns its
 * event loop only when asked, so its callers pass the ring's attention signal here.
 */
export function nodeEndpoint(port: NodePort, afterPost?: () => void): Comlink.Endpoint {
  const wrapped = new WeakMap<Listener, (data: unknown) => void>();
  return {
    postMessage: afterPost
      ? (message: unknown, transfer?: unknown[]) => {
          port.postMessage(message, transfer as never);
          afterPost();
        }
      : (message: unknown, transfer?: unknown[]) => port.postMessage(message, transfer as never),
    addEventListener: (_type: string, listener: Listener) => {
      const fn = (data: unknown): void => {
        const ev = { data } as Parameters<Extract<Listener, (...a: never[]) => unknown>>[0];
        if (typeof listener === 'function') listener(ev);
        else listener.handleEvent(ev);
      };
      wrapped.set(listener, fn);
      port.on('message', fn);
    },
    removeEventListener: (_type: string, listener: Listener) => {
      const fn = wrapped.get(listener);
      if (fn) {
        port.off('message', fn);
        wrapped.delete(listener);
      }
    },
  };
}

interface ErrorShape {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  [field: string]: unknown;
}

/**
 * What crosses: name, message, stack, code and the error's own data fields (errno, call,
 * target, bdf, step, undone, consumed, ...): primitives, and arrays or plain objects of them.
 * `cause` stays behind (it may hold anything); its text is in the message already.
 */
function errorShape(value: unknown): ErrorShape {
  const e = value instanceof Error ? value : new Error(String(value));
  const shape: ErrorShape = { name: e.name, message: e.message, stack: e.stack ?? '' };
  for (const [k, v] of Object.entries(e)) {
    if (
      k === 'cause' ||
      k === 'stack' ||
      k === 'message' ||
      typeof v === 'function' ||
      typeof v === 'symbol'
    )
      continue;
    if (
      v === null ||
      typeof v !== 'object' ||
      Array.isArray(v) ||
      Object.getPrototypeOf(v) === Object.prototype
    )
      shape[k] = v;
  }
  return shape;
}

/** The error again, as an instance of its class when its code (or SysError) names one. */
function rebuild(shape: ErrorShape): Error {
  const cls =
    ERROR_CLASSES.get(shape.code ?? '') ??
    (shape.name === 'SysError' ? ERROR_CLASSES.get('SysError') : undefined);
  const e: Error = cls
    ? (Object.create(cls.prototype as object) as Error)
    : new Error(shape.message);
  const { message, stack, ...fields } = shape;
  // message and stack are non-enumerable on an Error, as they were where it was thrown
  Object.defineProperty(e, 'message', { value: message, writable: true, configurable: true });
  if (stack)
    Object.defineProperty(e, 'stack', { value: stack, writable: true, configurable: true });
  return Object.assign(e, fields);
}

/** Install once per thread, on both sides. */
export function installErrorTransfer(): void {
  const builtin = Comlink.transferHandlers.get('throw');
  if (!builtin) throw new Error('comlink has no throw transfer handler to extend');
  Comlink.transferHandlers.set('throw', {
    canHandle: builtin.canHandle,
    serialize: ({ value }: { value: unknown }) => [errorShape(value), []],
    deserialize: (shape: ErrorShape) => {
      throw rebuild(shape);
    },
  } as Comlink.TransferHandler<unknown, unknown>);
}

export { Comlink };
