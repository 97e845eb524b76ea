/** The replay stack's clean-up: what a run undoes, in reverse order, whatever failed. */

/** Undo steps, run last-registered first; each runs once, errors are reported, not thrown. */
export class Cleanup {
  readonly #steps: { name: string; fn: () => Promise<unknown> }[] = [];
  #running: Promise<void> | null = null;
  constructor(private readonly say: (line: string) => void) {}

  add(name: string, fn: () => Promise<unknown>): void {
    this.#steps.push({ name, fn });
  }

  run(): Promise<void> {
    this.#running ??= (async () => {
      while (this.#steps.length > 0) {
        const step = this.#steps.pop() as { name: string; fn: () => Promise<unknown> };
        try {
          await step.fn();
        } catch (err) {
          this.say(`clean-up: ${step.name} failed: ${(err as Error).message}`);
        }
      }
    })();
    return this.#running;
  }
}
