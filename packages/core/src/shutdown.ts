import type { Logger } from 'pino';

type Step = { name: string; run: () => Promise<unknown> | unknown };

/**
 * Ordered shutdown: steps run last-registered-first (close what was opened last first),
 * then the `addLast` steps (e.g. flushing traces, so spans of the other steps are exported
 * too). Each step is bounded by a timeout so one stuck dependency cannot hold the process.
 */
export class Shutdown {
  private readonly steps: Step[] = [];
  private readonly finalSteps: Step[] = [];
  private running: Promise<void> | null = null;

  constructor(private readonly log: Logger, private readonly stepTimeoutMs = 10_000) {}

  add(name: string, run: Step['run']): void {
    this.steps.push({ name, run });
  }

  /** A step that runs after every `add` step, whenever it was registered. */
  addLast(name: string, run: Step['run']): void {
    this.finalSteps.push({ name, run });
  }

  /** Step names in the order `run()` executes them. */
  order(): string[] {
    return [...this.steps].reverse().concat([...this.finalSteps].reverse()).map((s) => s.name);
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of [...this.steps].reverse().concat([...this.finalSteps].reverse())) {
        let timer: NodeJS.Timeout | undefined;
        const started = Date.now();
        try {
          await Promise.race([
            Promise.resolve().then(step.run),
            new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('timed out')), this.stepTimeoutMs); }),
          ]);
          this.log.debug({ step: step.name, ms: Date.now() - started }, 'shutdown step done');
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
