/** The project's TypeScript sources under some top-level folders, for tests that read the tree. */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Every `.ts` file (not `.d.ts`) under `root/<folder>` for each of `folders`, as full paths. */
export function tsSources(root: string, folders: readonly string[]): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
    }
  };
  for (const folder of folders) walk(join(root, folder));
  return out;
}
