package auth_test

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/auth"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Known answers computed outside Go (Python's zlib.crc32 and hashlib.sha256),
// so the checksum and digest are checked against an independent implementation.
const (
	knownPAT       = "crp_0123456789abcdefghijABCDEFGHIJ3mpbCX"
	knownPATSHA256 = "7c2ab861ad02ddb9b112ae89c708bdef4bb32fd3de2c1e08eb895079fd263964"
	// CRC32 25314 needs three base62 digits, so the checksum is left-padded.
	knownPaddedPAT = "crp_padding000000000000000000001000006aI"
	// A 40-character random part: longer than minted, allowed by the contract.
	knownLongPAT = "crp_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz2x81PZ"
)

func TestNewPATHasTheDocumentedShape(t *testing.T) {
	const n = 1000
	seen := make(map[string]bool, n)
	counts := make(map[rune]int)
	for range n {
		secret, err := auth.NewPAT()
		if err != nil {
			t.Fatal(err)
		}
		if err := auth.ParsePAT(secret); err != nil {
			t.Fatalf("NewPAT minted a token ParsePAT refuses: %v", err)
		}
		if !strings.HasPrefix(secret, "crp_") || len(secret) != 4+30+6 {
			t.Fatalf("token of length %d, want crp_ + 36 characters", len(secret))
		}
		body := secret[4:]
		if strings.Trim(body, base62) != "" {
			t.Fatalf("token body has characters outside base62")
		}
		if !auth.LooksLikePAT(secret) {
			t.Fatal("LooksLikePAT refuses a minted token")
		}
		if p := auth.PATPrefix(secret); len(p) != 12 || !strings.HasPrefix(secret, p) {
			t.Fatalf("PATPrefix gives %d characters, want the first 12", len(p))
		}
		if seen[secret] {
			t.Fatal("NewPAT repeated a token")
		}
		seen[secret] = true
		for _, r := range body[:30] {
			counts[r]++
		}
	}

	// Every digit occurs, and the first eight are not favoured: b%62 over
	// random bytes would make them 25% more frequent than the rest.
	if len(counts) != 62 {
		t.Fatalf("random parts use %d distinct digits, want all 62", len(counts))
	}
	var low, high int
	for i, r := range base62 {
		if i < 8 {
			low += counts[r]
		} else {
			high += counts[r]
		}
	}
	ratio := (float64(low) / 8) / (float64(high) / 54)
	if ratio < 0.9 || ratio > 1.1 {
		t.Fatalf("digits 0-7 occur %.2f times as often as the others; want about 1", ratio)
	}
}

func TestParsePAT(t *testing.T) {
	valid := []string{knownPAT, knownPaddedPAT, knownLongPAT}
	for _, secret := range valid {
		if err := auth.ParsePAT(secret); err != nil {
			t.Errorf("ParsePAT(%s): %v", secret, err)
		}
	}

	invalid := []struct {
		name, secret, want string
	}{
		{"wrong prefix", "crx_" + knownPAT[4:], "wrong prefix"},
		{"upper-case prefix", "CRP_" + knownPAT[4:], "wrong prefix"},
		{"no prefix", knownPAT[4:], "wrong prefix"},
		{"empty", "", "wrong prefix"},
		{"prefix only", "crp_", "wrong length"},
		{"too short", "crp_" + knownPAT[5:], "wrong length"},
		{"too long", "crp_" + strings.Repeat("a", 129) + "000000", "wrong length"},
		{"dash", knownPAT[:10] + "-" + knownPAT[11:], "invalid character"},
		{"non-ASCII", knownPAT[:10] + "é" + knownPAT[12:], "invalid character"},
		{"checksum digit changed", knownPAT[:len(knownPAT)-1] + "Y", "checksum mismatch"},
		{"padding digit dropped", "crp_padding00000000000000000000100006aI0", "checksum mismatch"},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			err := auth.ParsePAT(tc.secret)
			assertUnauthenticated(t, err, tc.want, tc.secret)
		})
	}
}

// Any single changed character of the random part must break the checksum.
func TestParsePATDetectsEverySingleCharacterChange(t *testing.T) {
	for i := 4; i < 34; i++ {
		for _, c := range []byte{'0', 'a', 'Z'} {
			if knownPAT[i] == c {
				continue
			}
			mutated := knownPAT[:i] + string(c) + knownPAT[i+1:]
			assertUnauthenticated(t, auth.ParsePAT(mutated), "checksum mismatch", mutated)
		}
	}
}

func TestHashPATIsSHA256(t *testing.T) {
	if got := hex.EncodeToString(auth.HashPAT(knownPAT)); got != knownPATSHA256 {
		t.Fatalf("HashPAT = %s, want %s", got, knownPATSHA256)
	}
}

func TestPATPrefix(t *testing.T) {
	if got := auth.PATPrefix(knownPAT); got != "crp_01234567" {
		t.Fatalf("PATPrefix = %q, want crp_01234567", got)
	}
	if got := auth.PATPrefix("crp_1"); got != "crp_1" {
		t.Fatalf("PATPrefix of a short string = %q, want it whole", got)
	}
}

func FuzzParsePAT(f *testing.F) {
	for _, s := range []string{knownPAT, knownPaddedPAT, knownLongPAT, "", "crp_", "crp_" + strings.Repeat("0", 36), "crp_\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, secret string) {
		err := auth.ParsePAT(secret)
		if err == nil {
			if !auth.LooksLikePAT(secret) || len(secret) < 40 || len(secret) > 4+128+6 {
				t.Fatalf("ParsePAT accepted a token of the wrong shape (length %d)", len(secret))
			}
			if strings.Trim(secret[4:], base62) != "" {
				t.Fatal("ParsePAT accepted characters outside base62")
			}
			return
		}
		if coderun.ErrorCode(err) != coderun.EUnauthenticated {
			t.Fatalf("error code %q, want %q", coderun.ErrorCode(err), coderun.EUnauthenticated)
		}
		assertNoSecret(t, err, secret)
	})
}
