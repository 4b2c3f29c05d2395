/**
 * `pnpm bench`: runs every benchmark module in this folder (each exports `run()` returning
 * named measurements) against the local Postgres/NATS/Redis, and prints the results.
 * Benchmarks report numbers; they never fail on timing.
 */
import { readdir } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ensureInfra } from '@aos/testkit';

const dir = fileURLToPath(new URL('.', import.meta.url));
const only = process.argv[2];
const { urls, stop } = await ensureInfra();
process.env.TEST_DATABASE_URL = urls.databaseUrl;
process.env.NATS_URL = urls.natsUrl;
process.env.REDIS_URL = urls.redisUrl;

const files = (await readdir(dir)).filter((f) => f.endsWith('.ts') && f !== 'run.ts' && f !== 'stats.ts' && (!only || f.includes(only))).sort();
const results: Record<string, Record<string, number>> = {};
for (const file of files) {
  const mod = (await import(pathToFileURL(`${dir}${file}`).href)) as { run?: () => Promise<Record<string, number>> };
  if (typeof mod.run !== 'function') continue;
  console.log(`\n▶ ${file}`);
  results[file] = await mod.run();
  for (const [name, value] of Object.entries(results[file]!)) console.log(`  ${name.padEnd(40)} ${Number.isInteger(value) ? value : value.toFixed(2)}`);
}
await stop();
console.log(`\n${JSON.stringify(results)}`);
process.exit(0);
