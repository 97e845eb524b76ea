/**
 * Detached service processes and their pid files. `up` starts each service in a process group of
 * its own and records it; `down` signals exactly the groups it recorded, after checking that the
 * recorded pid still runs the same program (pids are recycled).
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { sleep } from '../../core/index.js';

export interface PidRecord {
  pid: number;
  /** A string the process's command line contains; guards against a recycled pid. */
  marker: string;
  startedAt: string;
}

export interface SpawnSpec {
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  logFile: string;
  pidFile: string;
  marker: string;
}

export async function spawnDetached(spec: SpawnSpec): Promise<PidRecord> {
  await mkdir(dirname(spec.logFile), { recursive: true });
  await mkdir(dirname(spec.pidFile), { recursive: true });
  const fd = openSync(spec.logFile, 'a');
  try {
    const child = spawn(spec.command, spec.args, {
      cwd: spec.cwd,
      env: spec.env ?? process.env,
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid as number));
      child.once('error', reject);
    });
    child.unref();
    const record: PidRecord = { pid, marker: spec.marker, startedAt: new Date().toISOString() };
    await writeFile(spec.pidFile, JSON.stringify(record) + '\n');
    return record;
  } finally {
    closeSync(fd);
  }
}

export async function readPidFile(pidFile: string): Promise<PidRecord | null> {
  try {
    return JSON.parse(await readFile(pidFile, 'utf8')) as PidRecord;
  } catch {
    return null;
  }
}

/** True when `pid` is alive and still runs the recorded program. */
export function isOurs(record: PidRecord): boolean {
  try {
    const cmdline = readFileSync(`/proc/${record.pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
    return cmdline.includes(record.marker) && !isZombie(record.pid);
  } catch {
    return false;
  }
}

function isZombie(pid: number): boolean {
  try {
    return statFields(pid)[0] === 'Z';
  } catch {
    return true;
  }
}

/** Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]. */
function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Live (non-zombie) pids whose process group is `pgid`. */
export function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      const fields = statFields(pid);
      if (Number(fields[2]) === pgid && fields[0] !== 'Z') members.push(pid);
    } catch {
      // the process ended while we looked
    }
  }
  return members;
}

/** Resident memory of a whole process group, in bytes. */
export function groupRssBytes(pgid: number): number {
  let total = 0;
  for (const pid of groupMembers(pgid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m?.[1]) total += Number(m[1]) * 1024;
    } catch {
      // gone
    }
  }
  return total;
}

/** SIGTERM the group, wait up to `graceMs`, then SIGKILL what is left. Removes the pid file. */
export async function stopGroup(
  record: PidRecord,
  pidFile: string,
  graceMs: number,
): Promise<'stopped' | 'killed'> {
  const pgid = record.pid;
  signalGroup(pgid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  let outcome: 'stopped' | 'killed' = 'stopped';
  while (groupMembers(pgid).length > 0) {
    if (Date.now() > deadline) {
      signalGroup(pgid, 'SIGKILL');
      outcome = 'killed';
      await sleep(200);
      if (groupMembers(pgid).length === 0) break;
    }
    await sleep(100);
  }
  await rm(pidFile, { force: true });
  return outcome;
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** The last `lines` lines of a log file, or a note that there is none. */
export async function tail(file: string, lines = 30): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return `(no log at ${file})`;
  }
}
