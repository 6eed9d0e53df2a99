-- Argo CD health check for inference.neuron-operator.io/NeuronInferenceService.
-- Install it as argocd-cm key resource.customizations.health.inference.neuron-operator.io_NeuronInferenceService
-- (charts/neuron-operator/README.md shows how). It reads the kstatus-style status the operator writes:
-- observedGeneration, the Ready summary, the abnormal-true Reconciling and Stalled conditions, and phase.
-- Tested by tests/unit/test_argocd_health.py against tests/unit/testdata/argocd/.
hs = {}

local function find_condition(status, condition_type)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

local function is_true(condition)
  return condition ~= nil and condition.status == "True"
end

local function message_of(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

-- A status older than the spec says nothing about the spec: wait until the operator has seen the change.
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find_condition(status, "Ready")
local reconciling = find_condition(status, "Reconciling")
local stalled = find_condition(status, "Stalled")

-- Stalled first: progress needs a change to the spec (invalid spec, failed compile), even if an older artifact
-- still serves (Ready=True, reason ServingOldArtifact). The operator never sets Stalled and Reconciling together.
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = message_of(stalled, "Stalled: " .. tostring(stalled.reason))
  return hs
end

-- Compiling or rolling out (a recompile keeps Ready=True while the previous artifact serves).
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = message_of(reconciling, "Reconciling: " .. tostring(reconciling.reason))
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Ready")
  return hs
end

if ready ~= nil and ready.status == "False" and (status.phase == "Degraded" or status.phase == "Failed") then
  hs.status = "Degraded"
  hs.message = message_of(ready, "Phase " .. status.phase)
  return hs
end

hs.status = "Progressing"
hs.message = message_of(ready, "Waiting for the Ready condition")
return hs
