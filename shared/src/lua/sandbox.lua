-- Trusted Lua of every sandbox, run before any user code: see `sandbox` and `GUARDS` in mod.rs.
local refusal, settle, max_elements, emit = ...
local error, rawget, type, select = error, rawget, type, select
local raw_pcall, raw_xpcall, raw_setmetatable, raw_tostring = pcall, xpcall, setmetatable, tostring
local string, table, tointeger = string, table, math.tointeger
local find, match, gmatch, gsub, rep = string.find, string.match, string.gmatch, string.gsub, string.rep
local raw_format, sub = string.format, string.sub
local move, insert, remove, concat, unpack = table.move, table.insert, table.remove, table.concat, table.unpack

-- Called, not tail-called, the originals keep their own name in argument errors.
local function pass(...) return ... end

-- Lua's matcher backtracks in C, where the CPU hook cannot stop it.
local function check(s, pattern)
  local refused = refusal(s, pattern)
  if refused then error(refused, 3) end
end
function string.find(s, pattern, init, plain, ...)
  if not plain then check(s, pattern) end
  return pass(find(s, pattern, init, plain, ...))
end
function string.match(s, pattern, ...)
  check(s, pattern)
  return pass(match(s, pattern, ...))
end
function string.gmatch(s, pattern, ...)
  check(s, pattern)
  return pass(gmatch(s, pattern, ...))
end
function string.gsub(s, pattern, ...)
  check(s, pattern)
  return pass(gsub(s, pattern, ...))
end

-- With nothing to copy, Lua's `rep` still loops `n` times in C; the result is "" all the same.
function string.rep(s, n, sep, ...)
  if s == "" and (sep == nil or sep == "") then
    local count = tointeger(n)
    if count and count > 1 then n = 1 end
  end
  return pass(rep(s, n, sep, ...))
end

-- These loop in C over the range given, or over `#t`, which `__len` can make anything; a range
-- longer than memory could fill is holes, and refused.
local function check_range(first, last)
  first, last = tointeger(first), tointeger(last)
  if first and last and last - first >= max_elements then
    error("range too large for the sandbox: " .. first .. " to " .. last, 3)
  end
end
function table.move(a, f, e, ...)
  check_range(f, e)
  return pass(move(a, f, e, ...))
end
function table.insert(t, ...)
  if type(t) == "table" then check_range(1, #t) end
  return pass(insert(t, ...))
end
function table.remove(t, ...)
  if type(t) == "table" then check_range(1, #t) end
  return pass(remove(t, ...))
end

-- The CPU budget is an error raised by the instruction hook, and running out of memory is an
-- error too: a pcall in a loop would catch them again and again. Once a limit is hit, they are
-- raised again, uncatchable.
local function settled(ok, ...)
  settle(ok, (...))
  return ok, ...
end
function pcall(...) return settled(raw_pcall(...)) end
-- Lua calls the message handler for the hook's own error from inside the hook, where hooks are
-- off: once the budget is spent, the handler must not start.
function xpcall(f, handler, ...)
  return settled(raw_xpcall(f, function(e) settle(true) return handler(e) end, ...))
end

-- No addresses out of the sandbox: `table: 0x55d0…` becomes `table`.
local REFERENCE = { table = true, ["function"] = true, thread = true, userdata = true }
local function safe_tostring(v)
  local s = raw_tostring(v)
  if REFERENCE[type(v)] and find(s, ": 0x%x+$") then return type(v) end
  return s
end
tostring = safe_tostring
function string.format(fmt, ...)
  if type(fmt) == "string" and find((gsub(fmt, "%%%%", "")), "%%[-+ #0-9.]*p") then
    error("'%p' is not allowed in the sandbox", 2)
  end
  local n, args = select("#", ...), { ... }
  for i = 1, n do
    if REFERENCE[type(args[i])] then args[i] = safe_tostring(args[i]) end
  end
  return pass(raw_format(fmt, unpack(args, 1, n)))
end

-- To the structured log, never to stdout or stderr.
function print(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = safe_tostring((select(i, ...))) end
  emit("print", concat(parts, "\t"))
end
function warn(...)
  local parts = {}
  for i = 1, select("#", ...) do
    local part = select(i, ...)
    if type(part) ~= "string" then
      error("bad argument #" .. i .. " to 'warn' (string expected, got " .. type(part) .. ")", 2)
    end
    parts[i] = part
  end
  local text = concat(parts)
  -- `@on`/`@off` control Lua's own warning switch, which the sandbox does not have.
  if sub(text, 1, 1) ~= "@" then emit("warn", text) end
end

-- Finalizers run with hooks off, beyond the budget's reach. Lua only honours a `__gc` present
-- when the metatable is set, so checking here is enough.
function setmetatable(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed", 2)
  end
  return raw_setmetatable(t, mt)
end

-- The strings' metatable holds the string library as `__index`: no handing it out or swapping it.
getmetatable("").__metatable = false
