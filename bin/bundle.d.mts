// Types of bin/bundle.mjs (plain JavaScript: it runs before tsx is loaded) for the TypeScript that imports it.
/** What the bundle is made from, read now: its digest, and each file's own digest by path. */
export interface SourceState {
  digest: string;
  files: Map<string, string>;
}
export function sourceState(): SourceState;
/** Where the bundle of the sources whose digest is `digest` is. */
export function bundlePath(digest: string): string;
/** Makes the bundle of `state` and returns its path; throws when it cannot, or when a source changed meanwhile. */
export function build(state?: SourceState): string;
/** The bundle's file URL to import, made first when there is none of the sources on disk; undefined when it cannot be had. */
export function bundleToRun(): string | undefined;
