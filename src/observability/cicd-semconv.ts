/**
 * The names of OpenTelemetry's CI/CD semantic conventions (`cicd.pipeline.*`) that Boxcar's
 * spans carry. They are still "development" names, only in the package's `incubating` entry:
 * its maintainers advise copying such names rather than loading that entry (770 KB, and free
 * to change in a minor release). cicd-semconv.test.ts checks each against the installed package.
 */

export const ATTR_CICD_PIPELINE_NAME = 'cicd.pipeline.name';
export const ATTR_CICD_PIPELINE_RUN_ID = 'cicd.pipeline.run.id';
export const ATTR_CICD_PIPELINE_ACTION_NAME = 'cicd.pipeline.action.name';
export const ATTR_CICD_PIPELINE_RESULT = 'cicd.pipeline.result';
export const ATTR_CICD_PIPELINE_TASK_NAME = 'cicd.pipeline.task.name';
export const ATTR_CICD_PIPELINE_TASK_RUN_ID = 'cicd.pipeline.task.run.id';
export const ATTR_CICD_PIPELINE_TASK_RUN_RESULT = 'cicd.pipeline.task.run.result';
export const ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL = 'cicd.pipeline.task.run.url.full';
export const ATTR_CICD_PIPELINE_TASK_TYPE = 'cicd.pipeline.task.type';
export const ATTR_CICD_WORKER_ID = 'cicd.worker.id';
export const ATTR_PROCESS_EXIT_CODE = 'process.exit.code';

export const CICD_PIPELINE_ACTION_NAME_VALUE_RUN = 'RUN';

/** The values of `cicd.pipeline.result` and `cicd.pipeline.task.run.result` (the same set). */
export const CICD_RESULT = {
  success: 'success',
  failure: 'failure',
  timeout: 'timeout',
  cancellation: 'cancellation',
  error: 'error',
  skip: 'skip',
} as const;
export type CicdResult = (typeof CICD_RESULT)[keyof typeof CICD_RESULT];

/** The values of `cicd.pipeline.task.type`: a job in a stage of one of these names has that type. */
export const CICD_PIPELINE_TASK_TYPE_VALUES: readonly string[] = ['build', 'test', 'deploy'];
