-- ingress_lb.hash_by: evaluation of a backend's upstream-hash-by expression for a
-- request, with the rules of ingress-nginx's util.parse_complex_value and
-- util.generate_var_value (rootfs/etc/nginx/lua/util.lua). This is data fetching:
-- the evaluated text is handed to the core (ilb_request.hash_key), which decides.
--
-- An expression is scanned left to right; at each position the first rule that
-- applies wins:
--   \$name    literal text "\$name", backslash included (stock keeps it)
--   ${name}   the variable name (name: [0-9a-zA-Z_]+)
--   $name     the variable name, the longest run of name characters
--   $         a lone "$" (not followed by "{name}" or a name character): literal "$"
--   text      a run of characters other than "$" and "\": literal
--   \         any other backslash is dropped (stock's regex never matches it)
-- A name made of digits only is a regex capture ($1 is ngx.var[1]). A variable
-- that is not found (nil) contributes nothing.
--
-- compile() runs once per backend per configuration; evaluate() runs per request
-- and allocates nothing beyond the variables' values and, when there are several
-- parts, the concatenated result.

local type = type
local tonumber = tonumber
local string_byte = string.byte
local string_find = string.find
local string_sub = string.sub
local table_concat = table.concat

local _M = {}

local BYTE_DOLLAR = 36      -- $
local BYTE_BACKSLASH = 92   -- \
local BYTE_LBRACE = 123     -- {

local NAME_CHARS = "^[0-9a-zA-Z_]+"


-- Compile an expression into a program:
--   { const = "text" }                 no variable: the same key for every request
--   { var = name }                     one variable and nothing else
--   { n = k, parts = {...}, is_var = {...} }   anything else
-- Adjacent literals are merged. name is a string, or a number for a capture.
function _M.compile(expr)
    if type(expr) ~= "string" then
        expr = ""
    end

    local parts, is_var, n = {}, {}, 0

    local function literal(text)
        if text == "" then
            return
        end
        if n > 0 and not is_var[n] then
            parts[n] = parts[n] .. text
            return
        end
        n = n + 1
        parts[n] = text
        is_var[n] = false
    end

    local function variable(name)
        if string_find(name, "^%d+$") then
            name = tonumber(name)
        end
        n = n + 1
        parts[n] = name
        is_var[n] = true
    end

    local i, len = 1, #expr
    while i <= len do
        local b = string_byte(expr, i)

        if b == BYTE_BACKSLASH then
            local _, e = string_find(expr, NAME_CHARS, i + 2)
            if string_byte(expr, i + 1) == BYTE_DOLLAR and e then
                -- \$name: kept as written, backslash included
                literal(string_sub(expr, i, e))
                i = e + 1
            else
                -- a backslash no rule matches is skipped
                i = i + 1
            end

        elseif b == BYTE_DOLLAR then
            local _, e, name
            if string_byte(expr, i + 1) == BYTE_LBRACE then
                _, e, name = string_find(expr, "^{([0-9a-zA-Z_]+)}", i + 1)
            end
            if e then
                -- ${name}
                variable(name)
                i = e + 1
            else
                _, e = string_find(expr, NAME_CHARS, i + 1)
                if e then
                    -- $name
                    variable(string_sub(expr, i + 1, e))
                    i = e + 1
                else
                    -- lone $
                    literal("$")
                    i = i + 1
                end
            end

        else
            -- text up to the next "$" or "\"
            local s = string_find(expr, "[$\\]", i)
            local e = s and s - 1 or len
            literal(string_sub(expr, i, e))
            i = e + 1
        end
    end

    if n == 0 then
        return { const = "" }
    end
    if n == 1 then
        if is_var[1] then
            return { var = parts[1] }
        end
        return { const = parts[1] }
    end
    return { n = n, parts = parts, is_var = is_var }
end


-- scratch for evaluate(): reused, so steady-state requests allocate no table
local buf = {}

-- The value of a compiled expression for the current request; `var` is ngx.var.
function _M.evaluate(program, var)
    local const = program.const
    if const then
        return const
    end

    local name = program.var
    if name then
        return var[name] or ""
    end

    local parts, is_var = program.parts, program.is_var
    local n = program.n
    for i = 1, n do
        local part = parts[i]
        if is_var[i] then
            part = var[part] or ""
        end
        buf[i] = part
    end
    local value = table_concat(buf, "", 1, n)
    for i = 1, n do
        buf[i] = nil
    end
    return value
end


return _M
