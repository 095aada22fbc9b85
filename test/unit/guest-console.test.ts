// The test guest's console parser (test/support/guest-console.ts): markers found behind kernel
// messages and terminal escapes, key=value fields, the JSON result, and the ways a run goes
// wrong (a failed check, a cut-off result line, a guest that never reached its init).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseGuestConsole } from '../support/guest-console.js';

const io =
  'md5=aa read_md5=aa mib=4 offset_mib=8 write_s=1.500 read_s=0.500 write_mib_s=2.66 read_mib_s=8.00';
const result = {
  pass: true,
  failed: 0,
  boot_to_init_s: 17.4,
  modules_s: 1.2,
  cpus: 2,
  clock: 'timer_list',
  kernel: '6.1.0-57-amd64',
  dd_mib: 4,
  dd_offset_mib: 8,
  pci: [],
  nvme: [],
  net: { eth0: '52:54:00:12:34:56' },
  checks: [],
  interrupts: [
    { name: 'nvme0q0', count: 10, chip: 'PCI-MSI' },
    { name: 'nvme0q1', count: 2051, chip: 'PCI-MSI' },
  ],
};
const good = [
  '\x1bc\x1b[?7lSeaBIOS (version 1.16.2)',
  'GUEST-START Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP',
  'GUEST-CHECK boot-to-init ok 17.400',
  '[   22.1] nvme nvme0: 1/0/0 default/read/poll queuesGUEST-CHECK nvme-model:nvme0 ok QEMU NVMe Ctrl',
  `GUEST-CHECK nvme-io:nvme0n1 ok ${io}`,
  'GUEST-CHECK nvme-irq:nvme0 ok nvme0q0=10 nvme0q1=2051 chip=PCI-MSI',
  `GUEST-RESULT ${JSON.stringify(result)}`,
  'GUEST-EXIT isa-debug-exit port 0x501 value 0',
].join('\r\n');

test('a passing console: checks, fields, NVMe timings, interrupts, boot time, exit value', () => {
  const c = parseGuestConsole(good);
  assert.ok(c.pass, c.problems.join('; '));
  assert.equal(c.problems, []);
  assert.is(c.checks.length, 4);
  assert.is(c.checks[1]!.value, 'QEMU NVMe Ctrl'); // found behind a kernel message
  assert.is(c.bootToInitS, 17.4);
  assert.equal(c.nvmeIo, [
    {
      ns: 'nvme0n1',
      ok: true,
      mib: 4,
      writeS: 1.5,
      readS: 0.5,
      writeMiBs: 2.66,
      readMiBs: 8,
      md5Match: true,
    },
  ]);
  assert.is(c.interrupts[1]!.count, 2051);
  assert.is(c.exitValue, 0);
  assert.is(c.kernel, '6.1.0-57-amd64');
});

test('a failed check fails the run and is named, with the GUEST-LOG lines kept', () => {
  const text = `${good.replace('nvme-model:nvme0 ok', 'nvme-model:nvme0 fail')}\nGUEST-LOG [ 3.1] oops`;
  const c = parseGuestConsole(text);
  assert.not.ok(c.pass);
  assert.equal(c.problems, ['check nvme-model:nvme0 failed: QEMU NVMe Ctrl']);
  assert.equal(c.log, ['[ 3.1] oops']);
});

test('a result line cut short (the VM ended before the UART drained) is reported as such', () => {
  const c = parseGuestConsole(good.slice(0, good.indexOf('"interrupts"')));
  assert.not.ok(c.pass);
  assert.match(c.problems[0]!, /GUEST-RESULT is not one JSON object/);
  assert.is(c.bootToInitS, 17.4); // from the check line instead
  assert.is(c.interrupts[1]!.name, 'nvme0q1'); // from the nvme-irq check
});

test('no marker at all says the guest never reached its init; checks without a result say where it stopped', () => {
  assert.match(
    parseGuestConsole('SeaBIOS\r\nBooting from ROM...\r\n').problems[0]!,
    /did not reach guest\/init/,
  );
  const c = parseGuestConsole('GUEST-CHECK boot-to-init ok 3.0\n');
  assert.match(c.problems[0]!, /no GUEST-RESULT line after 1 checks/);
});

test.run();
