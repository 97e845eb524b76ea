/** One documented variable. The table is also what `npm run stack -- env` prints. */
export interface VariableDoc {
  name: string;
  default: string;
  doc: string;
}
