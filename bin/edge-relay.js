#!/usr/bin/env node
// Runs the CLI: bundled when it can be, else the TypeScript through tsx (see
// below); no build step is needed either way. Started by
// bin/edge-relay (the command users run), which sets the allocator's
// environment first.
//
// SIGHUP's default action ends the process, and `serve` takes it over only
// once node has loaded the CLI and read the config (a second or
// more): a reload signal sent just after a (re)start (systemd's ExecReload, a
// config tool writing the file then signalling) killed the relay without a
// line. So it is caught from the first line here, counted, and handed to
// `serve` (src/cli/signal-handlers.ts, takeOverEarlyHangups). Other commands
// keep the default: a closed terminal ends `sub`.
if (process.argv[2] === 'serve') {
  const early = { hangups: 0, listener: () => early.hangups++ };
  globalThis[Symbol.for('edge-relay.early-sighup')] = early;
  process.on('SIGHUP', early.listener);
}

// The CLI's bundle of the sources on disk (bin/bundle.mjs: made first when there
// is none), or the TypeScript through tsx when none can be made, or when
// EDGE_RELAY_FROM_SOURCE=1 asks.
const { bundleToRun } = await import('./bundle.mjs');
const bundle = process.env.EDGE_RELAY_FROM_SOURCE === '1' ? undefined : bundleToRun();
if (bundle) {
  await import(bundle);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
