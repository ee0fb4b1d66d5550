// Loads the JSON Schemas in schemas/ and compiles each exactly once, with one
// ajv instance, when this module is first imported (that is, at start-up).
// Every wire message and the config are validated through these functions.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { projectFile } from '../project-files.ts';

const schemaDir = fileURLToPath(projectFile('schemas/'));

// code.optimize off: ajv's pass over the code it generates took a third of the
// ~300 ms these compile in (every process start, every test file), and V8 makes
// the two alike: validating a frame measured the same (33-68 ns) either way.
const AJV_OPTIONS = { allErrors: false, strict: true, allowUnionTypes: true, code: { optimize: false } } as const;
const ajv = new Ajv({ ...AJV_OPTIONS, useDefaults: true });

function readSchema(file: string): object {
  return JSON.parse(readFileSync(schemaDir + file, 'utf8')) as object;
}

function load(file: string): ValidateFunction {
  return ajv.compile(readSchema(file));
}

export const validateConfig = load('config.schema.json');

/** A hub's name as the config takes it (its schema's `hubName`): the CLI checks one given with `--key`. */
export const validateHubName = ((): ValidateFunction => {
  const validate = ajv.getSchema('https://edge-relay.dev/schemas/config.schema.json#/definitions/hubName');
  if (!validate) throw new Error('schema definition hubName is missing');
  return validate;
})();
// hc-response is referenced by hc-listener-message, so it is compiled first.
export const validateHttpResponseMessage = load('hc-response.schema.json');
export const validateListenerMessage = load('hc-listener-message.schema.json');

/** Any pub/sub client frame: a JSON object with a string `type`. */
export const validatePubSubEnvelope = load('pubsub-client-message.schema.json');
const PUBSUB_MESSAGE_ID = 'https://edge-relay.dev/schemas/pubsub-client-message.schema.json';

function pubsubDefinition(name: string): ValidateFunction {
  const validate = ajv.getSchema(`${PUBSUB_MESSAGE_ID}#/definitions/${name}`);
  if (!validate) throw new Error(`schema definition ${name} is missing`);
  return validate;
}

/** One validator per upstream message type the relay understands. */
export const pubsubMessageValidators: ReadonlyMap<string, ValidateFunction> = new Map(
  ['joinGroup', 'leaveGroup', 'sendToGroup', 'event', 'sequenceAck', 'ping', 'invoke', 'cancelInvocation'].map((t) => [
    t,
    pubsubDefinition(t),
  ]),
);
export const validateGroupName = pubsubDefinition('groupName');
/** A group a REST call names: not white space only either. */
export const validateRestGroupName = pubsubDefinition('restGroupName');
export const validateUserId = pubsubDefinition('userId');
export const validateInvocationId = pubsubDefinition('invocationId');
export const validateConnectionId = pubsubDefinition('connectionId');
export const validateRestGroupsBody = load('pubsub-rest-groups.schema.json');
/** An event handler's answer to the connect system event. */
export const validateConnectResponse = load('pubsub-connect-response.schema.json');

/**
 * Messages between edge nodes (schemas/bus-message.schema.json); the ops are
 * listed in src/bus/messages.ts. Compiled apart, with `removeAdditional`: a
 * member the schema does not name is taken out of the message, not a reason
 * to refuse it, so edges of two versions can share a bus while a deployment
 * is upgraded one edge at a time (a newer edge's new fields are ignored by
 * an older one, as they are in events it stored), and nothing unnamed
 * reaches the code that reads the message.
 */
const busAjv = new Ajv({ ...AJV_OPTIONS, removeAdditional: true });
busAjv.addSchema(readSchema('hc-response.schema.json'));
busAjv.compile(readSchema('bus-message.schema.json'));
const BUS_MESSAGE_ID = 'https://edge-relay.dev/schemas/bus-message.schema.json';

/** The validator of one bus message definition (the envelope header of op `op`); it removes members the definition does not name. */
export function busMessageValidator(op: string): ValidateFunction {
  const validate = busAjv.getSchema(`${BUS_MESSAGE_ID}#/definitions/${op}`);
  if (!validate) throw new Error(`schema definition ${op} is missing from bus-message.schema.json`);
  return validate;
}

/** One readable line per ajv error: `/listen/port: must be <= 65535`. */
export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  if (!errors || errors.length === 0) return 'invalid';
  return errors
    .map((e) => {
      const where = e.instancePath === '' ? '(root)' : e.instancePath;
      if (e.keyword === 'additionalProperties') {
        return `${where}: unknown key "${String((e.params as { additionalProperty: string }).additionalProperty)}"`;
      }
      if (e.keyword === 'enum') {
        return `${where}: must be one of ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`;
      }
      return `${where}: ${e.message ?? 'invalid'}`;
    })
    .join('; ');
}
