// bench/soak/soak.mjs: runs tests/blackbox/lib/soak.mjs once and prints its report (bench/soak/run.sh
// sets the environment: MICROSERVICE_BIN and friends, as ctest does for the tests).
//   node bench/soak/soak.mjs [--duration 600] [--nats-every 30] [--pg-every 45]
import { parseArgs } from 'node:util';
import * as h from '../../tests/blackbox/lib/harness.mjs';
import { runSoak, formatReport } from '../../tests/blackbox/lib/soak.mjs';

const { values: opt } = parseArgs({
  options: {
    duration: { type: 'string', default: '600' },
    'nats-every': { type: 'string', default: '30' },
    'pg-every': { type: 'string', default: '45' },
  },
});
const dir = h.workDir('soak');
const stamp = () => new Date().toISOString().slice(11, 19);
process.stdout.write(`# ${stamp()} soak in ${dir}; load average ${(await import('node:os')).loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
let report;
try {
  report = await runSoak({
    dir,
    durationS: Number(opt.duration),
    natsEveryS: Number(opt['nats-every']),
    pgEveryS: Number(opt['pg-every']),
    log: (l) => process.stdout.write(`# ${stamp()} ${l}\n`),
  });
} finally {
  await h.stopAll().catch((e) => process.stdout.write(`${e.message}\n`));
}
process.stdout.write(formatReport(report));
process.stdout.write(`# full report with the RSS series: ${dir}/soak-report.json\n`);
process.exit(report.ok ? 0 : 1);
