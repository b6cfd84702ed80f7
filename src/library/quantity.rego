package lib.moat.quantity

# Kubernetes resource quantities, parsed as the API server parses them, into
# numbers that compare exactly. Inlined by src/gen; CEL templates use
# Kubernetes' own quantity() library instead.
#
# OPA compares numbers as exact rationals of their literal text, so a
# decimal quantity becomes the literal "<mantissa>e<exponent>" ("100m" is
# 100e-3, equal to "0.1"); a binary one multiplies integers only ("1.5Gi" is
# 15 * 1024^3 e-1). No step rounds.

# As resource.ParseQuantity: the number may be empty ("Gi", "-", "." and
# "e3" are all 0), a trailing "E" is exa while "E3" is an exponent, and only
# the empty string is refused for having nothing at all.
pattern := `^([+-]?)([0-9]*\.?[0-9]*)(?:[eE]([+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$`

decimal_exponent := {"": 0, "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

binary_factor := {"Ki": 1024, "Mi": 1048576, "Gi": 1073741824, "Ti": 1099511627776, "Pi": 1125899906842624, "Ei": 1152921504606846976}

# parse(q) is the value of quantity q (a string, or a number as YAML may
# give it); undefined when q is not a quantity.
parse(q) := n {
	s := sprintf("%v", [q])
	s != ""
	m := regex.find_all_string_submatch_n(pattern, s, 1)[0]
	n := value(m[1], m[2], m[3], m[4])
}

# digits "1.50" -> ["0150", 2]: the mantissa as an integer and how many
# of its digits are decimals. The leading "0" makes "" and "." zero.
digits(num) := [d, f] {
	parts := split(num, ".")
	frac := fraction(parts)
	d := concat("", ["0", parts[0], frac])
	f := count(frac)
}

fraction(parts) := f {
	f := parts[1]
} else := ""

value(sign, num, exp, suffix) := n {
	exp != ""
	df := digits(num)
	n := to_number(sprintf("%s%se%d", [sign, df[0], to_number(exp) - df[1]]))
} else := n {
	e := decimal_exponent[suffix]
	df := digits(num)
	n := to_number(sprintf("%s%se%d", [sign, df[0], e - df[1]]))
} else := n {
	factor := binary_factor[suffix]
	df := digits(num)
	product := to_number(df[0]) * factor
	n := to_number(sprintf("%s%se%d", [sign, format_int(product, 10), 0 - df[1]]))
}
