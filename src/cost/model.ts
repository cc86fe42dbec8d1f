export interface Prices {
  dollarsPerGiBHour: number;
  dollarsPerCoreHour: number;
}

const HOURS_PER_MONTH = 730;
const SEED_SLOTS = 1000;
const SEED_SLOT_GIB = 0.25;
const SEED_SLOT_CORES = 1;

export const SEED_PRICES: Prices = {
  dollarsPerGiBHour: 5000 / (SEED_SLOTS * SEED_SLOT_GIB * HOURS_PER_MONTH),
  dollarsPerCoreHour: 3000 / (SEED_SLOTS * SEED_SLOT_CORES * HOURS_PER_MONTH),
};

export interface Usage {
  peakMemoryBytes: number;
  durationMs: number;
  cpuUsageNs: number;
}

/**
 * Prices a job from what it used: memory (GiB-seconds at its peak) and CPU (core-seconds).
 * Default rates come from the seed's baseline, "all runc, 1,000 concurrent jobs: memory
 * $5,000 + CPU $3,000 a month", read as 1,000 job slots of the default size (256 MiB, 1 core)
 * busy for a 730-hour month. Operators put their own prices in the config file.
 */
export function jobCostDollars(usage: Usage, prices: Prices = SEED_PRICES): number {
  const gibHours = (usage.peakMemoryBytes / 2 ** 30) * (usage.durationMs / 3_600_000);
  const coreHours = usage.cpuUsageNs / 1e9 / 3600;
  return gibHours * prices.dollarsPerGiBHour + coreHours * prices.dollarsPerCoreHour;
}
