/** Where the config file is when neither `--config` nor BOXCAR_CONFIG says (a module of its own: the CLI's help needs it, not the schema). */
export const SYSTEM_CONFIG = '/etc/boxcar/config.yaml';
