/**
 * The Kibana saved objects (`deploy/kibana/recsys.ndjson`) against the index templates the
 * indexer installs: every field a data view, Lens column, query or filter names must be mapped
 * in the template of the data streams that data view reads, and every reference must resolve
 * inside the file (Kibana imports a dangling reference as a broken panel).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dataStreamName, INDEX_TEMPLATES, STREAMS } from '../../../stream/indexer-docs.js';
import { mappedFields } from '../stream/mapped-fields.js';

interface Reference {
  id: string;
  name: string;
  type: string;
}

interface SavedObject {
  id: string;
  type: string;
  attributes: Record<string, unknown>;
  references: Reference[];
}

/** The checkout root: the nearest ancestor holding the package.json named "recsys". */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      const { name } = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown };
      if (name === 'recsys') return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('no package.json named "recsys" above this test');
    dir = parent;
  }
}

const NDJSON = join(repoRoot(), 'deploy', 'kibana', 'recsys.ndjson');

function load(): SavedObject[] {
  return readFileSync(NDJSON, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as SavedObject);
}

/** `a.b : x and c >= 3` → [a.b, c]. Quoted field names are not used in our objects. */
function kqlFields(query: string): string[] {
  const out: string[] = [];
  for (const m of query.matchAll(/(?:^|[\s(])(@?[A-Za-z_][\w.@-]*)\s*(?::|<=|>=|<|>)/g)) {
    out.push(m[1] as string);
  }
  return out;
}

interface Query {
  query?: unknown;
  language?: string;
}

interface Filter {
  meta?: { key?: string; index?: string };
  query?: unknown;
}

/** A field a saved object names, and the data views it must exist in. */
interface FieldUse {
  field: string;
  dataViews: string[];
  where: string;
}

interface LensColumn {
  sourceField?: string;
  filter?: Query;
  params?: { filters?: Array<{ input?: Query }> };
}

/** Every field use in `objects`, plus structural problems found on the way. */
function fieldUses(objects: SavedObject[]): { uses: FieldUse[]; problems: string[] } {
  const uses: FieldUse[] = [];
  const problems: string[] = [];
  const byId = new Map(objects.map((o) => [`${o.type}:${o.id}`, o]));
  const fromQuery = (q: Query | undefined, dataViews: string[], where: string): void => {
    if (q && typeof q.query === 'string' && q.language === 'kuery') {
      for (const field of kqlFields(q.query)) uses.push({ field, dataViews, where });
    }
  };
  const fromFilters = (filters: Filter[] | undefined, dataViews: string[], where: string): void => {
    for (const f of filters ?? []) {
      if (f.meta?.key) uses.push({ field: f.meta.key, dataViews, where: `${where} filter` });
    }
  };
  const lensDataViews = new Map<string, string[]>();

  for (const o of objects) {
    for (const ref of o.references) {
      if (!byId.has(`${ref.type}:${ref.id}`)) {
        problems.push(`${o.type}:${o.id}: reference ${ref.name} → missing ${ref.type}:${ref.id}`);
      }
    }
    const where = `${o.type}:${o.id}`;
    if (o.type === 'index-pattern') {
      const a = o.attributes as Record<string, string>;
      const runtime = Object.keys(JSON.parse(a.runtimeFieldMap ?? '{}') as object);
      if (runtime.length > 0) problems.push(`${where}: runtime fields are not checked`);
      uses.push({ field: a.timeFieldName ?? '', dataViews: [o.id], where: `${where} time field` });
      for (const key of ['fieldFormatMap', 'fieldAttrs']) {
        for (const field of Object.keys(JSON.parse(a[key] ?? '{}') as object)) {
          uses.push({ field, dataViews: [o.id], where: `${where} ${key}` });
        }
      }
    } else if (o.type === 'lens') {
      const state = o.attributes.state as {
        datasourceStates?: { formBased?: { layers?: Record<string, { columns?: object }> } };
        query?: Query;
        filters?: Filter[];
      };
      const layers = state.datasourceStates?.formBased?.layers ?? {};
      const all: string[] = [];
      for (const [layerId, layer] of Object.entries(layers)) {
        const ref = o.references.find(
          (r) =>
            r.name === `indexpattern-datasource-layer-${layerId}` && r.type === 'index-pattern',
        );
        if (!ref) {
          problems.push(`${where}: layer ${layerId} has no data view reference`);
          continue;
        }
        all.push(ref.id);
        for (const [columnId, column] of Object.entries(layer.columns ?? {}) as Array<
          [string, LensColumn]
        >) {
          const at = `${where} column ${columnId}`;
          if (column.sourceField !== undefined && column.sourceField !== '___records___') {
            uses.push({ field: column.sourceField, dataViews: [ref.id], where: at });
          }
          fromQuery(column.filter, [ref.id], `${at} filter`);
          for (const f of column.params?.filters ?? [])
            fromQuery(f.input, [ref.id], `${at} filters`);
        }
      }
      fromQuery(state.query, all, `${where} query`);
      fromFilters(state.filters, all, where);
      lensDataViews.set(o.id, all);
    }
  }

  // Dashboards last: their query and filters apply to every panel's data views.
  for (const o of objects.filter((x) => x.type === 'dashboard')) {
    const where = `dashboard:${o.id}`;
    const panels = JSON.parse(String(o.attributes.panelsJSON)) as Array<{
      panelIndex: string;
      panelRefName?: string;
    }>;
    const dataViews = new Set<string>();
    for (const p of panels) {
      const ref = o.references.find((r) => r.name === `${p.panelIndex}:${p.panelRefName}`);
      if (!p.panelRefName || !ref) {
        problems.push(`${where}: panel ${p.panelIndex} has no saved object reference`);
        continue;
      }
      for (const dv of lensDataViews.get(ref.id) ?? []) dataViews.add(dv);
    }
    const meta = o.attributes.kibanaSavedObjectMeta as { searchSourceJSON?: string } | undefined;
    const search = JSON.parse(meta?.searchSourceJSON ?? '{}') as {
      query?: Query;
      filter?: Filter[];
    };
    fromQuery(search.query, [...dataViews], `${where} query`);
    fromFilters(search.filter, [...dataViews], where);
  }
  return { uses, problems };
}

/** The template governing each data view, found by the data streams its pattern reads. */
function templateOf(dataView: SavedObject): (typeof INDEX_TEMPLATES)[keyof typeof INDEX_TEMPLATES] {
  const title = String(dataView.attributes.title);
  const glob = (pattern: string): RegExp =>
    new RegExp(`^${pattern.replaceAll('.', '\\.').replaceAll('*', '.*')}$`);
  const matching = STREAMS.filter((s) => glob(title).test(dataStreamName(s, 'default')));
  assert.equal(
    matching.length,
    1,
    `data view ${dataView.id} (${title}) reads ${matching.length} recsys data streams, not 1`,
  );
  const template = INDEX_TEMPLATES[matching[0] as (typeof STREAMS)[number]];
  // And every index it can read falls under that template (no foreign indices).
  assert.ok(
    template.index_patterns.some((p) => glob(p).test(title.replaceAll('*', 'x'))),
    `data view ${title} reaches beyond the template patterns ${template.index_patterns}`,
  );
  return template;
}

/** Field uses the templates do not map, plus structural problems. Empty = Kibana will work. */
function check(objects: SavedObject[]): string[] {
  const { uses, problems } = fieldUses(objects);
  const views = new Map(
    objects
      .filter((o) => o.type === 'index-pattern')
      .map((o) => [o.id, mappedFields(templateOf(o))]),
  );
  for (const u of uses) {
    for (const dv of u.dataViews) {
      const fields = views.get(dv);
      if (!fields) problems.push(`${u.where}: data view ${dv} is not in the file`);
      else if (!fields.has(u.field))
        problems.push(`${u.where}: ${u.field} is not mapped for ${dv}`);
    }
  }
  return problems;
}

const clone = (objects: SavedObject[]): SavedObject[] =>
  JSON.parse(JSON.stringify(objects)) as SavedObject[];

function lensColumns(o: SavedObject): Record<string, LensColumn> {
  const layers = (
    o.attributes.state as { datasourceStates: { formBased: { layers: Record<string, object> } } }
  ).datasourceStates.formBased.layers;
  return (Object.values(layers)[0] as { columns: Record<string, LensColumn> }).columns;
}

describe('Kibana saved objects', () => {
  it('is NDJSON of the object types Kibana imports, with unique ids', () => {
    const objects = load();
    const types = new Set(objects.map((o) => o.type));
    assert.deepEqual([...types].sort(), ['dashboard', 'index-pattern', 'lens']);
    const keys = objects.map((o) => `${o.type}:${o.id}`);
    assert.equal(new Set(keys).size, keys.length, 'duplicate ids');
    for (const o of objects) {
      assert.equal(typeof o.attributes.title, 'string', `${o.id}: title`);
      assert.ok(Array.isArray(o.references), `${o.id}: references`);
      assert.match(String((o as unknown as Record<string, unknown>).typeMigrationVersion), /^\d/);
    }
    const titles = objects.filter((o) => o.type === 'index-pattern').map((o) => o.attributes.title);
    assert.deepEqual(titles.sort(), [
      'logs-recsys.dlq-*',
      'logs-recsys.events-*',
      'logs-recsys.served-*',
    ]);
  });

  it('names only fields the index templates map, and every reference resolves', () => {
    const objects = load();
    const { uses } = fieldUses(objects);
    const named = new Set(uses.map((u) => u.field));
    // The extraction sees what the panels are built on (so an empty result cannot pass).
    for (const f of [
      '@timestamp',
      'event.action',
      'recsys.item_id',
      'event.duration',
      'error.code',
    ]) {
      assert.ok(named.has(f), `extractor missed ${f}`);
    }
    assert.deepEqual(check(objects), []);
  });

  it('catches a planted unmapped field in a Lens column, a query, a filter and a data view', () => {
    const objects = load();
    const lens = (o: SavedObject[]) => o.find((x) => x.id === 'recsys-top-items') as SavedObject;

    const column = clone(objects);
    for (const c of Object.values(lensColumns(lens(column)))) {
      if (c.sourceField === 'recsys.item_id') c.sourceField = 'recsys.item';
    }
    assert.ok(check(column).some((p) => p.includes('recsys.item is not mapped')));

    // A field of another stream: mapped for served feeds, not for events.
    const wrongStream = clone(objects);
    for (const c of Object.values(lensColumns(lens(wrongStream)))) {
      if (c.sourceField === 'recsys.item_id') c.sourceField = 'recsys.model_version';
    }
    assert.ok(check(wrongStream).some((p) => p.includes('recsys.model_version is not mapped for')));

    const query = clone(objects);
    (lens(query).attributes.state as { query: Query }).query = {
      language: 'kuery',
      query: 'event.action : purchase and (colour : red or recsys.value >= 3)',
    };
    const queryProblems = check(query);
    assert.ok(queryProblems.some((p) => p.includes('colour is not mapped')));
    assert.ok(!queryProblems.some((p) => p.includes('event.action is not')));

    const filter = clone(objects);
    const dashboard = filter.find((o) => o.type === 'dashboard') as SavedObject;
    (dashboard.attributes.kibanaSavedObjectMeta as { searchSourceJSON: string }).searchSourceJSON =
      JSON.stringify({
        query: { query: '', language: 'kuery' },
        filter: [{ meta: { key: 'host.name' } }],
      });
    assert.ok(check(filter).some((p) => p.includes('host.name is not mapped')));

    const timeField = clone(objects);
    (timeField.find((o) => o.id === 'recsys-served') as SavedObject).attributes.timeFieldName =
      'timestamp';
    assert.ok(
      check(timeField).some((p) => p.includes('timestamp is not mapped for recsys-served')),
    );
  });

  it('catches a dangling reference', () => {
    const objects = clone(load());
    const dashboard = objects.find((o) => o.type === 'dashboard') as SavedObject;
    (dashboard.references[0] as Reference).id = 'no-such-lens';
    assert.ok(check(objects).some((p) => p.includes('missing lens:no-such-lens')));
  });

  it('reads KQL field names', () => {
    assert.deepEqual(kqlFields('user.id : "alice" and (@timestamp >= now-1h or not x_y:1)'), [
      'user.id',
      '@timestamp',
      'x_y',
    ]);
  });
});
