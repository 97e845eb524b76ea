/**
 * What the index templates map, as dotted field paths, for the tests that check documents and
 * Kibana saved objects against them.
 */
import type { IndexTemplate } from '../../../stream/indexer-docs.js';

interface MappingNode {
  type?: string;
  properties?: Record<string, MappingNode>;
}

/** Every mapped leaf field of `template` → its type (`@timestamp` → `date`, ...). */
export function mappedFields(template: IndexTemplate): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (props: Record<string, MappingNode>, prefix: string): void => {
    for (const [name, node] of Object.entries(props)) {
      const path = prefix ? `${prefix}.${name}` : name;
      if (node.properties) walk(node.properties, path);
      else out.set(path, node.type ?? 'object');
    }
  };
  walk(template.template.mappings.properties as Record<string, MappingNode>, '');
  return out;
}

/** JSON value kinds each field type takes (a `date` takes epoch milliseconds). */
const ACCEPTS: Record<string, ReadonlyArray<string>> = {
  keyword: ['string'],
  text: ['string'],
  binary: ['string'],
  date: ['number'],
  integer: ['number'],
  long: ['number'],
  float: ['number'],
  double: ['number'],
  boolean: ['boolean'],
};

/**
 * Problems of one document against a template: leaf paths it does not map, and values of a kind
 * the mapped type does not take. Arrays of objects are walked element by element (object
 * arrays flatten to the same paths). An empty list means Elasticsearch takes the document.
 */
export function unmappedIn(doc: Record<string, unknown>, template: IndexTemplate): string[] {
  const fields = mappedFields(template);
  const problems: string[] = [];
  const visit = (value: unknown, path: string): void => {
    if (value === null || value === undefined) return;
    if (Array.isArray(value)) {
      for (const v of value) visit(v, path);
      return;
    }
    if (typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) visit(v, path ? `${path}.${k}` : k);
      return;
    }
    const type = fields.get(path);
    if (type === undefined) problems.push(`${path}: not mapped`);
    else if (!(ACCEPTS[type] ?? []).includes(typeof value)) {
      problems.push(`${path}: ${typeof value} in a ${type} field`);
    }
  };
  visit(doc, '');
  return problems;
}
