/**
 * Every environment variable the stack reads, with its default and what it sets: the one table
 * `loadConfig` (`config.ts`) validates against and `npm run stack -- env` prints. The entries
 * live in `variables/`, one file per side of the stack.
 */
import { BACKBONE } from './variables/backbone.js';
import { BATCH } from './variables/batch.js';
import { SERVING } from './variables/serving.js';
import { STREAM } from './variables/stream.js';
import type { VariableDoc } from './variables/doc.js';

export type { VariableDoc } from './variables/doc.js';

export const VARIABLES: readonly VariableDoc[] = [...BACKBONE, ...STREAM, ...BATCH, ...SERVING];
