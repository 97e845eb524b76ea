// The source folders read in one direction: core ← schemas ← store ← stream ← serving ← batch ←
// deploy ← bench. A file may import from its own folder or an earlier one, never a later one; the
// one exception is training's use of serving's feature and scoring code (batch → serving's
// rank-features and ranker). Files import each other in no circle, and stay within the size
// limits (450 lines a file, 150 a function). Read from the TypeScript sources with the compiler.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { tsSources } from './source-files.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const LAYERS = ['core', 'schemas', 'store', 'stream', 'serving', 'batch', 'deploy', 'bench'];
/** Later-layer files a folder may import anyway: training reads serving's feature code. */
const ALLOWED: Record<string, readonly string[]> = {
  batch: ['serving/rank-features.ts', 'serving/ranker.ts'],
};
const MAX_FILE_LINES = 450;
const MAX_FUNCTION_LINES = 150;

function sources(): string[] {
  return tsSources(ROOT, LAYERS);
}

interface Parsed {
  file: string;
  imports: string[];
  lines: number;
  functions: { name: string; line: number; lines: number }[];
}

function parse(path: string): Parsed {
  const text = readFileSync(path, 'utf8');
  const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true);
  const imports: string[] = [];
  const functions: Parsed['functions'] = [];
  const lineOf = (pos: number): number => sf.getLineAndCharacterOfPosition(pos).line + 1;
  const visit = (node: ts.Node): void => {
    let spec: ts.Expression | undefined;
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) spec = node.moduleSpecifier;
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      spec = node.arguments[0];
    }
    if (spec && ts.isStringLiteral(spec) && spec.text.startsWith('.')) {
      imports.push(relative(ROOT, resolve(dirname(path), spec.text.replace(/\.js$/, '.ts'))));
    }
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const start = lineOf(node.getStart(sf));
      const lines = lineOf(node.getEnd()) - start + 1;
      const name = node.name && ts.isIdentifier(node.name) ? node.name.text : '(anonymous)';
      functions.push({ name, line: start, lines });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return { file: relative(ROOT, path), imports, lines: text.split('\n').length, functions };
}

const parsed = sources().map(parse);
const layerOf = (file: string): number => LAYERS.indexOf(file.split('/')[0] as string);

describe('source layout', () => {
  it('imports only from the same or an earlier folder', () => {
    const backEdges: string[] = [];
    for (const { file, imports } of parsed) {
      const from = file.split('/')[0] as string;
      for (const target of imports) {
        if (layerOf(target) <= layerOf(file)) continue;
        if (ALLOWED[from]?.includes(target)) continue;
        backEdges.push(`${file} -> ${target}`);
      }
    }
    assert.deepEqual(backEdges, []);
  });

  it('has no import circle between files', () => {
    const graph = new Map(parsed.map((p) => [p.file, p.imports]));
    const state = new Map<string, 'open' | 'done'>();
    const circles: string[] = [];
    const walk = (file: string, path: string[]): void => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'open') {
        circles.push([...path.slice(path.indexOf(file)), file].join(' -> '));
        return;
      }
      state.set(file, 'open');
      for (const next of graph.get(file) ?? []) if (graph.has(next)) walk(next, [...path, file]);
      state.set(file, 'done');
    };
    for (const file of graph.keys()) walk(file, []);
    assert.deepEqual(circles, []);
  });

  it(`keeps files within ${MAX_FILE_LINES} lines and functions within ${MAX_FUNCTION_LINES}`, () => {
    const over: string[] = [];
    for (const { file, lines, functions } of parsed) {
      if (lines > MAX_FILE_LINES) over.push(`${file}: ${lines} lines`);
      for (const f of functions) {
        if (f.lines > MAX_FUNCTION_LINES)
          over.push(`${file}:${f.line} ${f.name}: ${f.lines} lines`);
      }
    }
    assert.deepEqual(over, []);
  });

  it('reads every source folder (the test sees the sources)', () => {
    for (const layer of LAYERS) {
      assert.ok(
        parsed.some((p) => p.file.startsWith(`${layer}/`)),
        `no source found under ${layer}/`,
      );
    }
  });
});
