-- Adds the fields of a job's metadata file (logs/<job id>.json, one flat JSON object of
-- strings Boxcar writes when the job's log starts) to each record of its log.
local cache = {}

local function read_metadata(log_file)
  local meta_file = log_file:gsub("%.log$", ".json")
  if cache[meta_file] then return cache[meta_file] end
  local f = io.open(meta_file, "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local meta = {}
  for key, value in text:gmatch('"([%w_]+)":"([^"]*)"') do meta[key] = value end
  cache[meta_file] = meta
  return meta
end

function add_job_metadata(tag, timestamp, record)
  local meta = record["log_file"] and read_metadata(record["log_file"])
  if not meta then return 0, timestamp, record end
  for key, value in pairs(meta) do record[key] = value end
  return 1, timestamp, record
end
