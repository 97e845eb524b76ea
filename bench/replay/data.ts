/**
 * `npm run eval:data [name ...]`: the public logs `eval:replay` runs on, downloaded from their
 * canonical sources into `~/.cache/recsys/datasets/<name>/` (RECSYS_CACHE_DIR) and checked
 * against pinned sha256 sums. Where no site is reachable (or the source needs a login), files
 * put into that folder by other means are only checked. Nothing here is ever committed.
 *
 * Per dataset: every file present and matching -> ok; a file that does not match -> the
 * command fails (exit 1); missing files -> a download is tried when the dataset has one, else
 * the folder and the expected sums are printed (exit 1 only when the dataset was named).
 *
 * @example
 *   npm run eval:data                    # movielens-100k and otto-sample
 *   npm run eval:data -- retailrocket    # checks events.csv put there by hand
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';

export interface DatasetFile {
  /** File name in the cache folder. */
  name: string;
  sha256: string;
  bytes: number;
  /** Path inside the downloaded zip, when the download is a zip. */
  inZip?: string;
}

export interface Dataset {
  name: string;
  title: string;
  licence: string;
  /** Where people get it (page). */
  source: string;
  /** A direct download, when there is one without a login. */
  download?: { url: string; sha256: string; kind: 'zip' | 'file' };
  files: DatasetFile[];
  /** The interaction log `eval:replay` reads, and its item catalog. */
  log: string;
  items?: string;
  /** Replayed by default (`eval:data` with no names). */
  byDefault: boolean;
  note?: string;
}

export const DATASETS: readonly Dataset[] = [
  {
    name: 'movielens-100k',
    title: 'MovieLens 100K (100,000 ratings, 943 users, 1,682 films, 1997-98)',
    licence:
      'GroupLens usage licence: research use, cite Harper & Konstan 2015, no redistribution, no commercial use (README in the folder)',
    source: 'https://grouplens.org/datasets/movielens/100k/',
    download: {
      url: 'https://files.grouplens.org/datasets/movielens/ml-100k.zip',
      sha256: '50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229',
      kind: 'zip',
    },
    files: [
      {
        name: 'u.data',
        inZip: 'ml-100k/u.data',
        bytes: 1_979_173,
        sha256: '06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490',
      },
      {
        name: 'u.item',
        inZip: 'ml-100k/u.item',
        bytes: 236_344,
        sha256: '553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701',
      },
      {
        name: 'README',
        inZip: 'ml-100k/README',
        bytes: 6_750,
        sha256: '4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52',
      },
    ],
    log: 'u.data',
    items: 'u.item',
    byDefault: true,
  },
  {
    name: 'otto-sample',
    title:
      'OTTO session sample: the first 20 sessions of the OTTO train set (862 events: clicks, carts, orders), a test fixture of the official repository',
    licence: 'CC BY 4.0 (data), as the OTTO dataset README states',
    source: 'https://github.com/otto-de/recsys-dataset',
    download: {
      url: 'https://raw.githubusercontent.com/otto-de/recsys-dataset/f404284240ac654d0b924b2fabec0aea7b23f168/test/resources/train.jsonl',
      sha256: '8994e47578f7467191185e612080696030495b6041015a6550b9d8af57f7c826',
      kind: 'file',
    },
    files: [
      {
        name: 'train.jsonl',
        bytes: 43_944,
        sha256: '8994e47578f7467191185e612080696030495b6041015a6550b9d8af57f7c826',
      },
    ],
    log: 'train.jsonl',
    byDefault: true,
    note: 'Tiny: a smoke test of the session format, too small for metrics. The full set (12.9M sessions, 220M events) is on Kaggle: otto/recsys-dataset.',
  },
  {
    name: 'rees46-head',
    title:
      'REES46 multi-category store, the first 2 h 50 min of October 2019 (17,434 events: 17,055 views, 165 carts, 214 purchases; 4,504 users, 6,493 products)',
    licence:
      'REES46 / Open CDP: free use, cite the source (the Kaggle page and https://rees46.com), as the dataset page states; Kaggle lists "Data files (c) Original Authors"',
    source:
      'https://www.kaggle.com/datasets/mkechinov/ecommerce-behavior-data-from-multi-category-store',
    download: {
      url: 'https://raw.githubusercontent.com/ibrhmspl/Team11_Customer_Segmentation/6bb1f7e0141b0b4d80564e528a46a4cddf602ae0/2019-Oct.csv',
      sha256: '3f27c30d1a43d33ed5cb1da6e688154a65bcd94a25e5c1fd1fed7fa276cec6d8',
      kind: 'file',
    },
    files: [
      {
        name: '2019-Oct.csv',
        bytes: 2_344_707,
        sha256: '3f27c30d1a43d33ed5cb1da6e688154a65bcd94a25e5c1fd1fed7fa276cec6d8',
      },
    ],
    log: '2019-Oct.csv',
    byDefault: false,
    note: 'The first 2,344,707 bytes of the full 2019-Oct.csv (5.3 GB, 42.4M events; https://data.rees46.com/datasets/marketplace/2019-Oct.csv.gz) with CRLF line ends, as committed to GitHub ibrhmspl/Team11_Customer_Segmentation (commit 6bb1f7e0, path 2019-Oct.csv); its rows equal the head of other copies (pantiukhin-dot/lab2_BD 2019-Oct.csv, LF). The last row is cut (skipped). user_id is the user, so repeat sessions of a user are one history; short: the median user has 2 events. By hand: save that raw file as 2019-Oct.csv in the folder.',
  },
  {
    name: 'retailrocket',
    title:
      'RetailRocket e-commerce events (2,756,101 events: view, addtocart, transaction; 1.4M visitors; 2015)',
    licence: 'CC BY-NC-SA 4.0',
    source: 'https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset',
    files: [
      {
        name: 'events.csv',
        bytes: 94_237_913,
        sha256: '3745aa83238b1e6d44d8fda209807899f420084398f94ddf745f3cbcfecbf9e7',
      },
    ],
    log: 'events.csv',
    byDefault: false,
    note: 'Kaggle needs a login: download the archive there and put events.csv into the folder; this command then checks it.',
  },
];

/** `<RECSYS_CACHE_DIR or ~/.cache/recsys>/datasets/<name>`. */
export function datasetDir(name: string, env = process.env): string {
  const root = (env.RECSYS_CACHE_DIR ?? '~/.cache/recsys').replace(/^~(?=\/|$)/, homedir());
  return join(root, 'datasets', name);
}

export function findDataset(name: string): Dataset | undefined {
  return DATASETS.find((d) => d.name === name);
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * The members of a zip archive, by name (stored or deflated entries; no zip64, no encryption:
 * enough for the dataset archives, read without an unzip program).
 */
export function unzip(zip: Buffer, names: readonly string[]): Map<string, Buffer> {
  // End of central directory: signature 0x06054b50 within the last 64 KiB + 22 bytes.
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 65_557); i--) {
    if (zip.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error('not a zip archive (no end of central directory)');
  const entries = zip.readUInt16LE(eocd + 10);
  let at = zip.readUInt32LE(eocd + 16);
  const wanted = new Set(names);
  const out = new Map<string, Buffer>();
  for (let n = 0; n < entries; n++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error('bad central directory entry');
    const method = zip.readUInt16LE(at + 10);
    const compressed = zip.readUInt32LE(at + 20);
    const nameLen = zip.readUInt16LE(at + 28);
    const extraLen = zip.readUInt16LE(at + 30);
    const commentLen = zip.readUInt16LE(at + 32);
    const local = zip.readUInt32LE(at + 42);
    const name = zip.toString('latin1', at + 46, at + 46 + nameLen);
    at += 46 + nameLen + extraLen + commentLen;
    if (!wanted.has(name)) continue;
    // The local header repeats name and extra field, with lengths of its own.
    const start = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const body = zip.subarray(start, start + compressed);
    if (method === 0) out.set(name, Buffer.from(body));
    else if (method === 8) out.set(name, inflateRawSync(body));
    else throw new Error(`${name}: compression method ${method} not supported`);
  }
  return out;
}

type FileState = 'ok' | 'missing' | 'mismatch';

async function checkFiles(d: Dataset, dir: string): Promise<Map<string, FileState>> {
  const states = new Map<string, FileState>();
  for (const f of d.files) {
    const path = join(dir, f.name);
    if (!existsSync(path)) states.set(f.name, 'missing');
    else states.set(f.name, sha256(await readFile(path)) === f.sha256 ? 'ok' : 'mismatch');
  }
  return states;
}

async function download(d: Dataset, dir: string, say: (l: string) => void): Promise<void> {
  if (!d.download) return;
  say(`  downloading ${d.download.url} ...`);
  const res = await fetch(d.download.url, { signal: AbortSignal.timeout(120_000) });
  if (!res.ok) throw new Error(`${d.download.url} answered ${res.status}`);
  const body = Buffer.from(await res.arrayBuffer());
  const got = sha256(body);
  if (got !== d.download.sha256) {
    throw new Error(`${d.download.url}: sha256 ${got}, expected ${d.download.sha256}`);
  }
  await mkdir(dir, { recursive: true });
  const members =
    d.download.kind === 'zip'
      ? unzip(
          body,
          d.files.map((f) => f.inZip ?? f.name),
        )
      : new Map([[d.files[0]?.name ?? '', body]]);
  for (const f of d.files) {
    const data = members.get(f.inZip ?? f.name);
    if (!data) throw new Error(`${f.inZip ?? f.name} is not in the download`);
    // Written beside, then renamed: a half-written file is never taken for the data.
    await writeFile(join(dir, `${f.name}.part`), data);
    await rename(join(dir, `${f.name}.part`), join(dir, f.name));
  }
}

/** Checks (and, where it can, downloads) one dataset; returns whether it is ready. */
export async function ensureDataset(
  d: Dataset,
  say: (line: string) => void,
): Promise<'ok' | 'missing' | 'mismatch'> {
  const dir = datasetDir(d.name);
  let states = await checkFiles(d, dir);
  const missing = () => [...states].filter(([, s]) => s === 'missing').map(([n]) => n);
  if (missing().length > 0 && d.download) {
    try {
      await download(d, dir, say);
    } catch (err) {
      say(`  download failed: ${(err as Error).message}`);
    }
    states = await checkFiles(d, dir);
  }
  const bad = [...states].filter(([, s]) => s === 'mismatch').map(([n]) => n);
  if (bad.length > 0) {
    say(`  MISMATCH: ${bad.join(', ')} in ${dir} do not match their sha256:`);
    for (const f of d.files.filter((x) => bad.includes(x.name))) say(`    ${f.sha256}  ${f.name}`);
    return 'mismatch';
  }
  if (missing().length > 0) {
    say(`  missing in ${dir}: ${missing().join(', ')}; get them from ${d.source}`);
    for (const f of d.files)
      say(`    ${f.sha256}  ${f.name} (${f.bytes.toLocaleString('en')} bytes)`);
    if (d.note) say(`  ${d.note}`);
    return 'missing';
  }
  say(`  ok: ${d.files.map((f) => f.name).join(', ')} in ${dir} match their sha256`);
  return 'ok';
}

async function main(): Promise<number> {
  const names = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const chosen = names.length > 0 ? names : DATASETS.filter((d) => d.byDefault).map((d) => d.name);
  let code = 0;
  for (const name of chosen) {
    const d = findDataset(name);
    if (!d) {
      console.error(`unknown dataset "${name}"; known: ${DATASETS.map((x) => x.name).join(', ')}`);
      code = 2;
      continue;
    }
    console.log(`${d.name}: ${d.title}\n  licence: ${d.licence}\n  source: ${d.source}`);
    const state = await ensureDataset(d, (l) => console.log(l));
    if (state === 'mismatch' || (state === 'missing' && names.length > 0)) code = 1;
  }
  return code;
}

const entry = process.argv[1] ?? '';
if (entry.endsWith('replay/data.js') || entry.endsWith('replay/data.ts')) {
  process.exitCode = await main();
}
