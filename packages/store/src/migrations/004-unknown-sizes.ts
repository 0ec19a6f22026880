import type { Migration } from './index.js';

/**
 * Files listed without their size (an HTTP index page names files only; `copy.plan` counts them in
 * `unknownSizes`). A copy's byte total counts only the sizes known, so a job view also says how many
 * files will still add to it: `plan_unknown` (from the listing, only growing) less `sized_late` (rows
 * of such files whose size a later event told). A file row remembers that its listing did not tell
 * its size (`listed_unknown`, sticky) and whether its size is still unknown (`size_unknown`).
 */
export const m004UnknownSizes: Migration = {
  version: 4,
  name: 'unknown-sizes',
  sql: `
ALTER TABLE copies ADD COLUMN plan_unknown INTEGER NOT NULL DEFAULT 0;
ALTER TABLE copies ADD COLUMN sized_late INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN listed_unknown INTEGER NOT NULL DEFAULT 0 CHECK (listed_unknown IN (0, 1));
ALTER TABLE files ADD COLUMN size_unknown INTEGER NOT NULL DEFAULT 0 CHECK (size_unknown IN (0, 1));
ALTER TABLE jobs ADD COLUMN bytes_unknown_files INTEGER NOT NULL DEFAULT 0;
`,
};
