// comlink over worker_threads: an Endpoint adapter for Worker / MessagePort / parentPort (the
// package's own node adapter has no usable typings under nodenext), and a throw handler that
// keeps an error's name, code, errno and message across the hop.
import * as Comlink from 'comlink';
import type { MessagePort, Worker } from 'node:worker_threads';

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
      ? (message: unknown, transfer?: unknown[]) => { port.postMessage(message, transfer as never); afterPost(); }
      : (message: unknown, transfer?: unknown[]) => port.postMessage(message, transfer as never),
    addEventListener: (_type: string, listener: Listener) => {
      const fn = (data: unknown): void => {
        const ev = { data } as Parameters<Extract<Listener, (...a: never[]) => unknown>>[0];
        if (typeof listener === 'function') listener(ev); else listener.handleEvent(ev);
      };
      wrapped.set(listener, fn);
      port.on('message', fn);
    },
    removeEventListener: (_type: string, listener: Listener) => {
      const fn = wrapped.get(listener);
      if (fn) { port.off('message', fn); wrapped.delete(listener); }
    },
  };
}

interface ErrorShape { name: string; message: string; stack?: string; code?: string; errno?: number; call?: string; target?: string }

/** Install once per thread, on both sides. */
export function installErrorTransfer(): void {
  const builtin = Comlink.transferHandlers.get('throw');
  if (!builtin) throw new Error('comlink has no throw transfer handler to extend');
  Comlink.transferHandlers.set('throw', {
    canHandle: builtin.canHandle,
    serialize: ({ value }: { value: unknown }) => {
      const e = (value instanceof Error ? value : new Error(String(value))) as Error & Partial<ErrorShape>;
      const shape: ErrorShape = { name: e.name, message: e.message, stack: e.stack ?? '', ...(e.code ? { code: e.code } : {}), ...(e.errno !== undefined ? { errno: e.errno } : {}), ...(e.call ? { call: e.call, target: e.target ?? '' } : {}) };
      return [shape, []];
    },
    deserialize: (shape: ErrorShape) => {
      throw Object.assign(new Error(shape.message), shape);
    },
  } as Comlink.TransferHandler<unknown, unknown>);
}

export { Comlink };
