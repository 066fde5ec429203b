-- Argo CD health check for kaudit.dev/AuditCollection.
-- Install it under the argocd-cm key `resource.customizations.health.kaudit.dev_AuditCollection`
-- (see docs/gitops.md). It follows the kstatus conventions the operator writes:
--   * status.observedGeneration behind metadata.generation: the operator has not acted on the
--     latest spec yet -> Progressing;
--   * no Ready condition yet, or Ready=Unknown -> Progressing;
--   * Ready=True (for the current generation) -> Healthy;
--   * Ready=False with a reason that means "still converging" -> Progressing;
--   * Ready=False with any other reason (a refused policy, a conflict, a refused agent) -> Degraded.
-- Written for Lua 5.1, the dialect Argo CD embeds.

local hs = { status = "Progressing", message = "Waiting for the kaudit operator to report status" }

-- Ready=False reasons that mean the operator is still working and will get there on its own
-- (kaudit.reconcile.status.PROGRESSING_REASONS: waiting for the policy installers' node reports;
-- on EKS, for AWS to apply an update or create the log group, or for a throttled AWS API).
-- Every other Ready=False reason is a refusal or failure that needs a person. Ready=True with
-- reason RestartRequired is Healthy: the policy is in place and restarting kube-apiserver is the
-- user's own step, which a sync should not wait for.
local converging = {
  AwsUnavailable = true,
  AwsUnreachable = true,
  ClusterNotActive = true,
  Enabling = true,
  Installing = true,
  LogGroupPending = true,
  NoAuditLog = true,
  NoReports = true,
  Throttled = true,
  UpdateInProgress = true,
}

local function find_condition(conditions, wanted)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == wanted then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. condition.message
  end
  return text
end

local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil then
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find_condition(status.conditions, "Ready")
if ready == nil then
  return hs
end
-- A Ready condition written for an older generation says nothing about the current spec.
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  if hs.message == "" then
    hs.message = "Ready"
  end
elseif ready.status == "False" and not converging[ready.reason or ""] then
  hs.status = "Degraded"
  hs.message = describe(ready)
else
  hs.message = describe(ready)
end
return hs
