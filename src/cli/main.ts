// edge-relay's command line: dispatches to one module per command, loaded
// only when that command runs: `serve` loads the whole relay (and compiles
// every schema), which `token`, `pub`, `sub` and `bridge` need not wait for.

export const MAIN_HELP = `Usage: edge-relay COMMAND [options]

Commands:
  serve        run an edge node            (edge-relay serve --help)
  token sas    print a SAS token            (edge-relay token --help)
  token client print a pub/sub client access URL (edge-relay token client --help)
  bridge       forward TCP ports through hybrid connections (edge-relay bridge --help)
  pub          publish to a pub/sub group  (edge-relay pub --help)
  sub          watch a pub/sub group       (edge-relay sub --help)

Example:
  edge-relay serve --config config/dev.json --port 0
`;

export async function main(argv: string[]): Promise<number> {
  // A stderr whose reader is gone (`edge-relay pub ... 2>&1 | head -1`, a closed terminal) drops the commands' own
  // lines, as the log drops its (telemetry/logger.ts). Before, the first of them ended the process as crashed
  // (exit 1, an unhandled EPIPE): pub with a skipped line sent nothing after it, a bridge whose token was about to
  // expire stopped forwarding.
  process.stderr.on('error', () => {});
  try {
    return await run(argv);
  } catch (err) {
    // A flag the command does not know, or one that wants a value it did not get: said in a line, exit 2.
    if (!String((err as { code?: unknown })?.code).startsWith('ERR_PARSE_ARGS')) throw err;
    process.stderr.write(`edge-relay ${argv[0]}: ${(err as Error).message}\n(edge-relay ${argv[0]} --help lists its options)\n`);
    return 2;
  }
}

async function run(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return (await import('./serve.ts')).serve(rest);
    case 'token':
      return (await import('./token.ts')).token(rest);
    case 'bridge':
      return (await import('./bridge.ts')).bridge(rest);
    case 'pub':
      return (await import('./pub.ts')).pub(rest);
    case 'sub':
      return (await import('./sub.ts')).sub(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(MAIN_HELP);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`edge-relay: unknown command "${command}"\n\n${MAIN_HELP}`);
      return 2;
  }
}

/**
 * How long the process may outlive its command. Nothing should keep it once the command has ended, but a log write
 * to a stderr nobody reads would, for good (telemetry/logger.ts): a stopped relay then never exited.
 */
const EXIT_GRACE_MS = 2000;

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
    // Once nothing is left to do, ended here rather than by node's own way out: that closes every handle first,
    // signal watchers included, and a signal landing in the milliseconds until the process is gone took its
    // default action: a second Ctrl-C (a terminal's and npm's both) ended a command that had stopped cleanly with
    // 130 in place of its 0 (seen once the bundled CLI stopped faster). process.exit leaves the watchers in place.
    process.once('beforeExit', () => process.exit());
  },
  (err: unknown) => {
    process.stderr.write(`edge-relay: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
