// A read-only MC146818 RTC/CMOS at 0x70/0x71: the time of day (host UTC, BCD, 24-hour), update
// never in progress, battery good. Without it Linux's rtc_cmos probe polls the all-ones
// "update in progress" bit 10,000 times (20,000 port exits, 13 s of a lab guest's boot).
import { CTL } from './shared.js';

export const CMOS_INDEX = 0x70,
  CMOS_DATA = 0x71;
const bcd = (n: number): number => ((Math.floor(n / 10) % 10) << 4) | (n % 10);

export function cmosWrite(ctl: Int32Array, port: number, v: number): void {
  if (port === CMOS_INDEX) Atomics.store(ctl, CTL.CMOS_INDEX, v & 0x7f); // bit 7 is the NMI mask
}

export function cmosRead(ctl: Int32Array, port: number): number {
  if (port === CMOS_INDEX) return 0xff;
  const d = new Date();
  switch (Atomics.load(ctl, CTL.CMOS_INDEX)) {
    case 0x00:
      return bcd(d.getUTCSeconds());
    case 0x02:
      return bcd(d.getUTCMinutes());
    case 0x04:
      return bcd(d.getUTCHours());
    case 0x06:
      return d.getUTCDay() + 1;
    case 0x07:
      return bcd(d.getUTCDate());
    case 0x08:
      return bcd(d.getUTCMonth() + 1);
    case 0x09:
      return bcd(d.getUTCFullYear() % 100);
    case 0x32:
      return bcd(Math.floor(d.getUTCFullYear() / 100)); // century
    case 0x0a:
      return 0x26; // 32.768 kHz time base, 1024 Hz; UIP clear
    case 0x0b:
      return 0x02; // 24-hour, BCD, no interrupts
    case 0x0d:
      return 0x80; // valid RAM and time
    default:
      return 0;
  }
}
