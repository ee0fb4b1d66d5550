// Types of bin/bundle.mjs (plain JavaScript: it runs before tsx is loaded) for the TypeScript that imports it.
/** One digest of what the bundle is made from: every src/**\/*.ts, tsconfig.json, bin/bundle.mjs, esbuild's version. */
export function sourceDigest(): string;
/** Makes build/edge-relay.mjs from the sources whose digest is `digest`. */
export function build(digest?: string): void;
/** The bundle's file URL to import, made again first when the sources changed; undefined when it cannot be had. */
export function bundleToRun(): string | undefined;
