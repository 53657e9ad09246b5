-- Argo CD health check for tributary.dev/StreamingIngestion.
--
-- Argo CD does not look through a custom resource to the Deployments, Jobs and CronJobs it
-- owns, so the operator summarises the workers' health in the resource's own status; this
-- script maps that status to an Argo CD health status:
--
--   status.observedGeneration behind metadata.generation  -> Progressing (spec not acted on yet)
--   spec.suspend true, or phase Suspended                  -> Suspended
--   phase Failed, condition Degraded=True,
--     or status.lastRun.result Failed                      -> Degraded
--   condition Ready=True, or phase Succeeded               -> Healthy
--   anything else                                          -> Progressing, with Ready's message
--
-- Install: argocd-cm key resource.customizations.health.tributary.dev_StreamingIngestion
-- (see README.md next to this file). Tests: health_test.yaml and testdata/.

local hs = {}

local function condition(status, conditionType)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

-- A condition written for an older generation says nothing about the current spec.
local function current(c, generation)
  if c == nil then
    return nil
  end
  if generation ~= nil and c.observedGeneration ~= nil and c.observedGeneration < generation then
    return nil
  end
  return c
end

local function nonEmpty(s)
  return s ~= nil and s ~= ""
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local spec = obj.spec or {}
local status = obj.status

-- 1. The operator has not acted on the current spec yet.
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the StreamingIngestion"
  return hs
end
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (observed " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local ready = current(condition(status, "Ready"), generation)
local degraded = current(condition(status, "Degraded"), generation)

-- 2. Suspended on purpose.
if spec.suspend == true or status.phase == "Suspended" then
  hs.status = "Suspended"
  if ready ~= nil and nonEmpty(ready.message) and ready.reason == "Suspended" then
    hs.message = ready.message
  else
    hs.message = "Suspended: no workers run (spec.suspend)"
  end
  return hs
end

-- 3. Something needs a person.
local lastRunFailed = status.lastRun ~= nil and status.lastRun.result == "Failed"
local degradedTrue = degraded ~= nil and degraded.status == "True"
if status.phase == "Failed" or degradedTrue or lastRunFailed then
  hs.status = "Degraded"
  if degradedTrue and nonEmpty(degraded.message) then
    hs.message = degraded.message
  elseif lastRunFailed and nonEmpty(status.lastRun.message) then
    hs.message = status.lastRun.message
  elseif lastRunFailed and nonEmpty(status.lastRun.jobName) then
    hs.message = "The last run (Job " .. status.lastRun.jobName .. ") failed"
  elseif lastRunFailed then
    hs.message = "The last run failed"
  elseif ready ~= nil and nonEmpty(ready.message) then
    hs.message = ready.message
  else
    hs.message = "The ingestion failed"
  end
  return hs
end

-- 4. Doing its job.
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = nonEmpty(ready.message) and ready.message or "Ready"
  return hs
end
if status.phase == "Succeeded" then
  hs.status = "Healthy"
  if ready ~= nil and nonEmpty(ready.message) then
    hs.message = ready.message
  else
    hs.message = "The run succeeded"
  end
  return hs
end

-- 5. Starting, rolling out, catching up.
hs.status = "Progressing"
if ready ~= nil and nonEmpty(ready.message) then
  hs.message = ready.message
else
  hs.message = "Waiting for the ingestion to become ready"
end
return hs
