// Where the files the relay reads at run time are: the JSON Schemas and the
// dashboard's page. Every path is taken from the project's folder, found from
// this module, one folder below it; bin/bundle.mjs puts the bundled CLI one
// folder below it too (build/edge-relay-DIGEST.mjs), so the same paths resolve
// whether the relay runs from src/ through tsx or from the bundle. (A module
// deeper in src/ naming its files relative to itself broke in the bundle.)
const PROJECT_ROOT = new URL('../', import.meta.url);

/** A file or folder of the project, by its path from the project's folder (a folder ends with '/'). */
export function projectFile(path: string): URL {
  return new URL(path, PROJECT_ROOT);
}
