import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DEPENDENCY_CODES,
  DependencyUnavailableError,
  ERROR_CODES,
  HTTP_ERRORS,
  RecsysError,
} from '../../../core/index.js';

const TABLE = join(dirname(fileURLToPath(import.meta.url)), '../../../../docs/errors.md');

describe('error codes', () => {
  it('are listed in docs/errors.md with their status and retriable flag', () => {
    const section = readFileSync(TABLE, 'utf8');
    for (const [code, info] of Object.entries(ERROR_CODES)) {
      const cells = section
        .split('\n')
        .map((line) => line.split('|').map((c) => c.trim()))
        .find((row) => row[1] === `\`${code}\``);
      assert.ok(cells, `${code} is missing (npm run stack -- errors prints the table)`);
      assert.equal(cells[2], String(info.status), `${code}: status`);
      assert.equal(cells[3], info.retriable ? 'yes' : 'no', `${code}: retriable`);
    }
  });

  it('give errors their retriable flag unless the caller says otherwise', () => {
    assert.equal(new RecsysError('RECSYS_REGISTRY_LOCKED', 'x').retriable, true);
    assert.equal(new RecsysError('RECSYS_CSV_COLUMNS', 'x').retriable, false);
    assert.equal(new RecsysError('RECSYS_CSV_COLUMNS', 'x', { retriable: true }).retriable, true);
  });

  it('name every dependency with a code of the table', () => {
    for (const [dependency, code] of Object.entries(DEPENDENCY_CODES)) {
      const err = new DependencyUnavailableError(dependency as keyof typeof DEPENDENCY_CODES, 'x');
      assert.equal(err.code, code);
      assert.equal(err.retriable, true);
      assert.ok(code in ERROR_CODES);
    }
  });

  it('answer HTTP errors with the status of their code', () => {
    for (const kind of Object.values(HTTP_ERRORS)) {
      assert.equal(kind.status, ERROR_CODES[kind.code].status);
    }
  });
});
