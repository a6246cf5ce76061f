-- Trusted Lua run once per chain state, before any user code: see `PRELUDE` in chain.rs.
local error, next, rawset, setmetatable, type = error, next, rawset, setmetatable, type
local READ_ONLY = "attempt to modify a read-only table"
local frozen = {}

-- Library tables are shared by every event of the hook: hand out read-only views of them.
local function freeze(lib)
  local view = setmetatable({}, {
    __index = lib,
    __newindex = function() error(READ_ONLY, 2) end,
    __pairs = function() return next, lib, nil end,
    __metatable = false,
  })
  frozen[view] = true
  return view
end

local base = {}
for name, value in next, _ENV do
  if type(value) == "table" then base[name] = freeze(value) else base[name] = value end
end

function base.rawset(t, k, v)
  if frozen[t] then error(READ_ONLY, 2) end
  return rawset(t, k, v)
end

local env = setmetatable({}, { __index = base, __metatable = false })
base._G = env
return env, base
