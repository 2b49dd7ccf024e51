package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"strings"
)

// A personal access token is "crp_" + random base62 + a base62 CRC32 of the
// random part. The checksum lets us (and secret scanners) reject a mistyped or
// made-up token without a database round trip; the prefix lets both recognise it.
const (
	patPrefix      = "crp_"
	patRandomLen   = 30 // minted length: 30 × log2(62) ≈ 178 bits
	patChecksumLen = 6  // 62^6 > 2^32, so every CRC32 fits
	// patMaxRandomLen bounds the work done on garbage; the contract allows
	// longer random parts than we mint, not unbounded ones.
	patMaxRandomLen = 128
	// patDisplayLen is how much of a secret PATPrefix keeps: the prefix and
	// 8 random characters, enough to tell tokens apart, far too few to guess one.
	patDisplayLen = len(patPrefix) + 8
)

// base62 digits in ascending value, so '0' is zero and left-padding with it
// does not change a number.
const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewPAT mints a personal access token secret. Only HashPAT of it may be stored.
func NewPAT() (string, error) {
	random := make([]byte, 0, patRandomLen)
	buf := make([]byte, patRandomLen+8) // a few spare bytes: some are rejected below
	for len(random) < patRandomLen {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("mint access token: %w", err)
		}
		for _, b := range buf {
			// Rejection sampling: keep 6 bits and drop 62 and 63, so every digit
			// is equally likely (b % 62 would favour the first eight).
			if v := b & 0x3f; v < 62 && len(random) < patRandomLen {
				random = append(random, base62[v])
			}
		}
	}
	return patPrefix + string(random) + patChecksum(string(random)), nil
}

// patChecksum is the CRC32 (IEEE) of random as patChecksumLen base62 digits.
func patChecksum(random string) string {
	var out [patChecksumLen]byte
	n := crc32.ChecksumIEEE([]byte(random))
	for i := patChecksumLen - 1; i >= 0; i-- {
		out[i] = base62[n%62]
		n /= 62
	}
	return string(out[:])
}

// ParsePAT checks the form of a personal access token secret: prefix, length,
// alphabet and checksum. It says which check failed but never echoes the secret.
func ParsePAT(secret string) error {
	if !LooksLikePAT(secret) {
		return unauthenticated("malformed access token: wrong prefix")
	}
	body := secret[len(patPrefix):]
	if n := len(body) - patChecksumLen; n < patRandomLen || n > patMaxRandomLen {
		return unauthenticated("malformed access token: wrong length")
	}
	for i := 0; i < len(body); i++ {
		if strings.IndexByte(base62, body[i]) < 0 {
			return unauthenticated("malformed access token: invalid character")
		}
	}
	random, sum := body[:len(body)-patChecksumLen], body[len(body)-patChecksumLen:]
	if patChecksum(random) != sum {
		return unauthenticated("malformed access token: checksum mismatch")
	}
	return nil
}

// HashPAT is the SHA-256 of a secret: what the store keeps and looks tokens up by.
// The secret has ~178 random bits, so a fast unsalted hash is enough.
func HashPAT(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// PATPrefix is the displayable start of a secret ("crp_" and 8 characters), by
// which people name a token in listings and when revoking it.
func PATPrefix(secret string) string {
	return secret[:min(len(secret), patDisplayLen)]
}

// LooksLikePAT reports whether s is meant as a personal access token (rather
// than a JWT), judging by its prefix alone.
func LooksLikePAT(s string) bool {
	return strings.HasPrefix(s, patPrefix)
}
