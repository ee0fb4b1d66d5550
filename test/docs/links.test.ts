// Links between the project's pages stay whole: every relative link in the
// README and docs/ names a file that exists, and every #anchor a heading of
// the page it points to (GitHub's way of making anchors from headings).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return markdownFiles(path);
    return entry.name.endsWith('.md') ? [path] : [];
  });
}

/** The page without its fenced code blocks and inline code (what looks like a link there is not one). */
function prose(text: string): string {
  return text.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/`[^`\n]*`/g, '');
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens; repeats get -1, -2. */
function anchorsOf(text: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  const withoutFences = text.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
  for (const match of withoutFences.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const words = match[1].replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
    const slug = words
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\p{M} _-]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

interface Link {
  page: string;
  target: string;
}

function linksOf(page: string): Link[] {
  const text = prose(readFileSync(page, 'utf8'));
  return [...text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((m) => ({ page, target: m[1] }));
}

describe('links between the pages', () => {
  const pages = [join(ROOT, 'README.md'), ...markdownFiles(join(ROOT, 'docs'))];

  it('make anchors as GitHub does', () => {
    const anchors = anchorsOf('# Quick start\n## What happens when something fails\n## `bus.jetstream` keys\n## Scale out (NATS)\n## Scale out (NATS)\n```\n# not a heading\n```\n');
    assert.deepEqual([...anchors], ['quick-start', 'what-happens-when-something-fails', 'busjetstream-keys', 'scale-out-nats', 'scale-out-nats-1']);
  });

  it('name files that exist, and anchors that a heading of their page makes', (t) => {
    const broken: string[] = [];
    let checked = 0;
    for (const page of pages) {
      for (const { target } of linksOf(page)) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
        checked++;
        const [path, anchor] = target.split('#', 2);
        const file = path === '' ? page : join(dirname(page), decodeURIComponent(path));
        const where = `${relative(ROOT, page)} -> ${target}`;
        if (!existsSync(file)) {
          broken.push(`${where}: no such file`);
          continue;
        }
        if (anchor !== undefined && file.endsWith('.md') && !anchorsOf(readFileSync(file, 'utf8')).has(decodeURIComponent(anchor))) {
          broken.push(`${where}: no such heading`);
        }
      }
    }
    assert.ok(checked > 50, `${checked} links checked`);
    t.diagnostic(`${checked} relative links checked`);
    assert.deepEqual(broken, []);
  });
});
