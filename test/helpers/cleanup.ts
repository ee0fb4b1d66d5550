// Collects clean-up work for a suite: run() undoes everything, last added first.
export class Cleanup {
  private readonly tasks: (() => unknown)[] = [];

  after(fn: () => unknown): void {
    this.tasks.push(fn);
  }

  async run(): Promise<void> {
    while (this.tasks.length > 0) {
      try {
        await this.tasks.pop()!();
      } catch {
        // keep cleaning
      }
    }
  }
}
