-- Trusted helpers of every template render (see chunk.rs): run before any template code.
local json, ctx = ...
local G, type, tostring, setmetatable, select =
  _ENV, type, tostring, setmetatable, select
local gsub, format, mtype, concat = string.gsub, string.format, math.type, table.concat
local HTML = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
  ["'"] = "&#39;", ["/"] = "&#47;" }
local CODE = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
  ["'"] = "&#39;", ["/"] = "&#47;", ["{"] = "&#123;", ["}"] = "&#125;" }
local function str(v)
  if mtype(v) == "float" then return format("%.14g", v) end
  return tostring(v)
end
local function out(v)
  if v == nil then return "" end
  local t = type(v)
  if t == "string" then return v end
  if t == "function" then return out(v()) end
  if t == "table" then return json(v) or "" end
  if t == "userdata" or t == "thread" then return "" end
  return str(v)
end
local function esc(v, code)
  if code then return (gsub(out(v), "[}{\">/<'&]", CODE)) end
  return (gsub(out(v), "[\">/<'&]", HTML))
end
local function walk(v, ...)
  for i = 1, select("#", ...) do
    if type(v) ~= "table" then return nil end
    v = v[(select(i, ...))]
  end
  return v
end
local function echo(buffer, ...)
  for i = 1, select("#", ...) do buffer[#buffer + 1] = str((select(i, ...))) end
end
local env = setmetatable({ context = ctx }, { __index = function(_, k)
  if type(ctx) == "table" then
    local v = ctx[k]
    if v ~= nil then return v end
  end
  return G[k]
end })
return env, { esc = esc, out = out, walk = walk, echo = echo, concat = concat }
