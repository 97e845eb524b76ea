import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  fileName,
  hourOf,
  isLakeTime,
  lakeGlob,
  parseFileName,
  partitionDir,
  planRecovery,
  tempName,
  type LakeFile,
} from '../../../stream/lake-layout.js';

const dirOf = (ts: number): string => partitionDir('t', hourOf(ts));

describe('lake partition directories', () => {
  it('files an event under the UTC date and hour of its ts', () => {
    assert.equal(dirOf(Date.UTC(2026, 10, 25, 23, 59, 59, 999)), 'topic=t/date=2026-11-25/hour=23');
    assert.equal(dirOf(Date.UTC(2026, 10, 26, 0, 0, 0, 0)), 'topic=t/date=2026-11-26/hour=00');
    assert.equal(dirOf(Date.UTC(2024, 1, 29, 7, 30)), 'topic=t/date=2024-02-29/hour=07');
    assert.equal(dirOf(0), 'topic=t/date=1970-01-01/hour=00');
    // Before the epoch the hour still starts on the hour (floor, not truncation toward zero).
    assert.equal(dirOf(-1), 'topic=t/date=1969-12-31/hour=23');
  });

  it('gives every ms of one hour the same directory, and the next ms the next one', () => {
    const start = Date.UTC(2026, 0, 1, 5);
    assert.equal(hourOf(start), hourOf(start + 3_599_999));
    assert.equal(hourOf(start + 3_600_000), hourOf(start) + 1);
  });

  it('accepts only times a date=YYYY-MM-DD directory and a Parquet timestamp can hold', () => {
    assert.equal(new Date(-62_167_219_200_000).toISOString(), '0000-01-01T00:00:00.000Z');
    assert.ok(isLakeTime(-62_167_219_200_000));
    assert.ok(!isLakeTime(-62_167_219_200_001));
    assert.ok(isLakeTime(253_402_300_799_999));
    assert.ok(!isLakeTime(253_402_300_800_000));
    assert.ok(isLakeTime(Date.now()));
    for (const bad of [1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60]) {
      assert.ok(!isLakeTime(bad), String(bad));
    }
    assert.equal(partitionDir('t', hourOf(253_402_300_799_999)), 'topic=t/date=9999-12-31/hour=23');
  });

  it('globs one topic at the depth of its files', () => {
    assert.equal(lakeGlob('/l/', 'recsys.events.v1'), '/l/topic=recsys.events.v1/*/*/*.parquet');
  });
});

describe('lake file names', () => {
  it('round-trips topic, partition and offset range, also for topics with dashes', () => {
    const topic = 'recsys.events-v1';
    const name = fileName(topic, 12, 100n, 2n ** 62n);
    assert.equal(name, `recsys.events-v1-12-100-${2n ** 62n}.parquet`);
    assert.deepEqual(parseFileName(topic, 'd', name), {
      dir: 'd',
      name,
      topic,
      partition: 12,
      first: 100n,
      last: 2n ** 62n,
      temp: false,
    });
  });

  it('recognises temp names, which the *.parquet glob does not match', () => {
    const temp = tempName(fileName('t', 0, 5n, 9n));
    assert.equal(temp, '.t-0-5-9.parquet.tmp');
    assert.ok(!temp.endsWith('.parquet'));
    assert.equal(parseFileName('t', 'd', temp)?.temp, true);
    assert.equal(parseFileName('t', 'd', temp)?.first, 5n);
  });

  it('ignores other topics, other files and impossible ranges', () => {
    assert.equal(parseFileName('t', 'd', fileName('u', 0, 1n, 2n)), null);
    // "t-x" is another topic whose names also start with "t-".
    assert.equal(parseFileName('t', 'd', fileName('t-x', 0, 1n, 2n)), null);
    assert.equal(parseFileName('t', 'd', 't-0-9-3.parquet'), null);
    for (const other of ['t-0-1-2.parquet.bak', '.probe-1', 't-a-1-2.parquet', 'x.parquet']) {
      assert.equal(parseFileName('t', 'd', other), null, other);
    }
  });
});

function file(first: bigint, last: bigint, opts: { temp?: boolean; dir?: string } = {}): LakeFile {
  const name = fileName('t', 3, first, last);
  return {
    dir: opts.dir ?? 'topic=t/date=2026-01-01/hour=00',
    name: opts.temp ? tempName(name) : name,
    topic: 't',
    partition: 3,
    first,
    last,
    temp: opts.temp ?? false,
  };
}

describe('recovery plan', () => {
  it('keeps ranges below the committed offset and removes the ones at or after it', () => {
    const files = [file(0n, 99n), file(100n, 199n), file(200n, 299n), file(300n, 350n)];
    const plan = planRecovery(files, 200n);
    assert.deepEqual(
      plan.remove.map((f) => f.first),
      [200n, 300n],
    );
    assert.deepEqual(plan.trim, []);
  });

  it('removes every file of one roll, in whichever hour directories it landed', () => {
    const a = file(100n, 199n, { dir: 'topic=t/date=2026-01-01/hour=00' });
    const b = file(100n, 199n, { dir: 'topic=t/date=2026-01-01/hour=01' });
    const c = file(0n, 99n, { dir: 'topic=t/date=2026-01-01/hour=01' });
    const plan = planRecovery([a, b, c], 100n);
    assert.deepEqual(plan.remove, [a, b]);
  });

  it('removes temp files whatever their range', () => {
    const temp = file(0n, 10n, { temp: true });
    assert.deepEqual(planRecovery([temp], 500n).remove, [temp]);
  });

  it('trims a file that contains the committed offset to the rows below it', () => {
    const plan = planRecovery([file(150n, 250n), file(0n, 149n)], 200n);
    assert.deepEqual(plan.remove, []);
    assert.equal(plan.trim.length, 1);
    assert.equal(plan.trim[0]?.name, fileName('t', 3, 150n, 199n));
    // The edge: a range ending exactly at the committed offset still holds it.
    assert.equal(
      planRecovery([file(150n, 200n)], 200n).trim[0]?.name,
      fileName('t', 3, 150n, 199n),
    );
    assert.deepEqual(planRecovery([file(150n, 199n)], 200n), { remove: [], trim: [] });
  });

  it('a new group from the start of the log rewrites everything', () => {
    const files = [file(0n, 99n), file(100n, 199n)];
    assert.deepEqual(planRecovery(files, 0n).remove, files);
  });

  it('on the rolls a writer makes, never trims and keeps exactly the committed offsets', () => {
    // Random rolls tiling 0..n, each roll split into 1-4 hour files; commits land on roll
    // boundaries (that is all the writer commits).
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const files: LakeFile[] = [];
      const boundaries = [0n];
      let at = 0n;
      for (let r = 0; r < 1 + rand(20); r++) {
        const last = at + BigInt(rand(50));
        for (let h = 0; h <= rand(4); h++) {
          files.push(file(at, last, { dir: `topic=t/date=2026-01-01/hour=0${h}` }));
        }
        at = last + 1n;
        boundaries.push(at);
      }
      const committed = boundaries[rand(boundaries.length)] as bigint;
      const plan = planRecovery(files, committed);
      assert.deepEqual(plan.trim, []);
      const kept = files.filter((f) => !plan.remove.includes(f));
      assert.ok(kept.every((f) => f.last < committed));
      assert.ok(plan.remove.every((f) => f.first >= committed));
      const covered = new Set(kept.flatMap((f) => [f.first, f.last]));
      if (committed > 0n) assert.ok(covered.has(0n) && covered.has(committed - 1n));
    }
  });
});
