// Where a command takes a key from (a SAS key; a hub's access key, hub-access.ts): --key, the file --key-file names, or
// the environment variable EDGE_RELAY_KEY. A command line is visible to every
// user of the machine (ps); a file or the environment is not.
import { secretFileText } from '../config/secrets.ts';

/** The variable a key may come from, when asked for with --key-name and neither key option. */
export const KEY_ENV = 'EDGE_RELAY_KEY';

/**
 * The key: from --key (`flag`), from the file --key-file names (its trailing newline dropped), or else from
 * EDGE_RELAY_KEY (`fromEnv`; an empty variable is unset); undefined when none gives one, a problem for a file
 * that cannot be read or is empty.
 */
export function keyOf(flag: string | undefined, file: string | undefined, fromEnv: string | undefined): string | undefined | { problem: string } {
  if (flag !== undefined) return flag;
  if (file !== undefined) {
    const read = secretFileText(file);
    if ('text' in read) return read.text;
    return { problem: read.problem === 'empty' ? `--key-file ${file} is empty` : `--key-file ${file}: ${read.problem}` };
  }
  return fromEnv === '' ? undefined : fromEnv;
}
