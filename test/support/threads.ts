// Run a test thread (a compiled file under dist/test/support) and collect its single answer.
import { Worker } from 'node:worker_threads';

export const supportUrl = (file: string): URL => new URL(`./${file}`, import.meta.url);

export function runThread<T>(file: string, data: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const w = new Worker(supportUrl(file), { workerData: data });
    w.once('message', (m) => {
      resolve(m as T);
      void w.terminate();
    });
    w.once('error', reject);
    w.once('exit', (code) => {
      if (code !== 0) reject(new Error(`${file} exited with code ${code}`));
    });
  });
}
