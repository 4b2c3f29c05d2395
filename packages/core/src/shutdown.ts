import type { Logger } from 'pino';

type Step = { name: string; run: () => Promise<unknown> | unknown };

/**
 * Ordered shutdown: steps run last-registered-first (close what was opened last first),
 * each bounded by a timeout so one stuck dependency cannot hold the process forever.
 */
export class Shutdown {
  private readonly steps: Step[] = [];
  private running: Promise<void> | null = null;

  constructor(private readonly log: Logger, private readonly stepTimeoutMs = 10_000) {}

  add(name: string, run: Step['run']): void {
    this.steps.push({ name, run });
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of [...this.steps].reverse()) {
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            Promise.resolve().then(step.run),
            new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('timed out')), this.stepTimeoutMs); }),
          ]);
        } catch (err) {
          this.log.warn({ err, step: step.name }, 'shutdown step failed');
        } finally {
          clearTimeout(timer);
        }
      }
    })();
    return this.running;
  }
}
