/*
 * fcm/oauth.c: the service-account file, the RS256 assertion (checked with
 * the public key), the form body, the token answer parser and the renewal
 * rule.
 */
#include "tests/unit/test.h"

#include <cjson/cJSON.h>
#include <openssl/pem.h>
#include <stdlib.h>

#include "common/certgen.h"
#include "common/jws.h"
#include "fcm/oauth.h"

static char dir[64];

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Write a Google-style service-account file around a fresh RSA key. */
static void make_account(char *sa_path, char *pub_path)
{
    snprintf(dir, sizeof dir, "/tmp/varsel-oauth-XXXXXX");
    ASSERT_NOT_NULL(mkdtemp(dir));
    atexit(remove_dir);
    char key[128], err[256];
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(pub_path, 128, "%s/key.pub.pem", dir);
    ASSERT_EQ_INT(0, certgen_rsa_key(key, pub_path, err, sizeof err));
    FILE *f = fopen(key, "r");
    ASSERT_NOT_NULL(f);
    char pem[8192];
    size_t n = fread(pem, 1, sizeof pem - 1, f);
    pem[n] = '\0';
    fclose(f);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "service_account");
    cJSON_AddStringToObject(o, "project_id", "skole-test");
    cJSON_AddStringToObject(o, "private_key_id", "kid-123");
    cJSON_AddStringToObject(o, "private_key", pem);
    cJSON_AddStringToObject(o, "client_email", "varsel@skole-test.iam.gserviceaccount.com");
    cJSON_AddStringToObject(o, "token_uri", "https://oauth2.googleapis.com/token");
    char *s = cJSON_Print(o);
    snprintf(sa_path, 128, "%s/sa.json", dir);
    f = fopen(sa_path, "w");
    fputs(s, f);
    fclose(f);
    free(s);
    cJSON_Delete(o);
}

TEST(assertion_verifies_with_public_key)
{
    char sa_path[128], pub[128], err[256];
    make_account(sa_path, pub);
    struct fcm_service_account sa;
    ASSERT_EQ_INT(0, fcm_service_account_load(sa_path, &sa, err, sizeof err));
    ASSERT_STR_EQ("skole-test", sa.project_id);
    ASSERT_STR_EQ("https://oauth2.googleapis.com/token", sa.token_uri);
    char *jwt = fcm_oauth_assertion(&sa, sa.token_uri, 1764300000);
    ASSERT_NOT_NULL(jwt);
    char *hj = NULL, *cj = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0, signing = 0;
    ASSERT_EQ_INT(0, jws_compact_split(jwt, &hj, &cj, &sig, &siglen, &signing));
    EVP_PKEY *pk = jws_load_public_key_file(pub, err, sizeof err);
    ASSERT_NOT_NULL(pk);
    ASSERT_EQ_INT(256, siglen);
    ASSERT_EQ_INT(1, jws_verify_rs256(pk, jwt, signing, sig, siglen));
    sig[10] ^= 1;
    ASSERT_EQ_INT(0, jws_verify_rs256(pk, jwt, signing, sig, siglen));
    cJSON *h = cJSON_Parse(hj), *c = cJSON_Parse(cj);
    ASSERT_STR_EQ("RS256", cJSON_GetObjectItem(h, "alg")->valuestring);
    ASSERT_STR_EQ("JWT", cJSON_GetObjectItem(h, "typ")->valuestring);
    ASSERT_STR_EQ("kid-123", cJSON_GetObjectItem(h, "kid")->valuestring);
    ASSERT_STR_EQ("varsel@skole-test.iam.gserviceaccount.com",
                  cJSON_GetObjectItem(c, "iss")->valuestring);
    ASSERT_STR_EQ(FCM_OAUTH_SCOPE, cJSON_GetObjectItem(c, "scope")->valuestring);
    ASSERT_STR_EQ("https://oauth2.googleapis.com/token", cJSON_GetObjectItem(c, "aud")->valuestring);
    ASSERT_EQ_INT(1764300000, (long long)cJSON_GetObjectItem(c, "iat")->valuedouble);
    ASSERT_EQ_INT(1764303600, (long long)cJSON_GetObjectItem(c, "exp")->valuedouble);
    cJSON_Delete(h);
    cJSON_Delete(c);
    free(hj);
    free(cj);
    free(sig);
    free(jwt);
    EVP_PKEY_free(pk);
    fcm_service_account_clear(&sa);
}

TEST(service_account_errors_name_the_field)
{
    char sa_path[128], pub[128], err[256];
    make_account(sa_path, pub);
    struct fcm_service_account sa;
    ASSERT_EQ_INT(-1, fcm_service_account_load("/nonexistent/sa.json", &sa, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "cannot open");
    FILE *f = fopen(sa_path, "w");
    fputs("{\"type\":\"service_account\",\"client_email\":\"a@b\"}", f);
    fclose(f);
    ASSERT_EQ_INT(-1, fcm_service_account_load(sa_path, &sa, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "private_key");
    f = fopen(sa_path, "w");
    fputs("not json", f);
    fclose(f);
    ASSERT_EQ_INT(-1, fcm_service_account_load(sa_path, &sa, err, sizeof err));
    ASSERT_STR_CONTAINS(err, "not a JSON object");
}

TEST(form_body)
{
    char *b = fcm_oauth_form_body("aaa.bbb.ccc");
    ASSERT_STR_EQ("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
                  "&assertion=aaa.bbb.ccc", b);
    free(b);
}

TEST(token_answer_parsed_leniently)
{
    char *tok = NULL;
    int64_t exp = 0;
    const char *ok = "{\"access_token\":\"ya29.x\",\"expires_in\":3599,\"token_type\":\"Bearer\"}";
    ASSERT_EQ_INT(0, fcm_oauth_parse_token((const uint8_t *)ok, strlen(ok), &tok, &exp));
    ASSERT_STR_EQ("ya29.x", tok);
    ASSERT_EQ_INT(3599, exp);
    free(tok);
    const char *noexp = "{\"access_token\":\"t\"}";
    ASSERT_EQ_INT(0, fcm_oauth_parse_token((const uint8_t *)noexp, strlen(noexp), &tok, &exp));
    ASSERT_EQ_INT(3600, exp);
    free(tok);
    const char *strexp = "{\"access_token\":\"t\",\"expires_in\":\"20\"}";
    ASSERT_EQ_INT(0, fcm_oauth_parse_token((const uint8_t *)strexp, strlen(strexp), &tok, &exp));
    ASSERT_EQ_INT(20, exp);
    free(tok);
    /* A lifetime below one second (found by fuzzing) means "no usable
     * expiry": the default hour, never a token that is born expired. */
    const char *tiny = "{\"access_token\":\"a\",\"expires_in\":4E-44}";
    ASSERT_EQ_INT(0, fcm_oauth_parse_token((const uint8_t *)tiny, strlen(tiny), &tok, &exp));
    ASSERT_EQ_INT(3600, exp);
    free(tok);
    const char *bad[] = { "", "{}", "[]", "{\"access_token\":\"\"}", "{\"access_token\":1}",
                          "{\"error\":\"invalid_grant\"}", "garbage" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tok = NULL;
        ASSERT_EQ_INT(-1, fcm_oauth_parse_token((const uint8_t *)bad[i], strlen(bad[i]), &tok, &exp));
        ASSERT_NULL(tok);
    }
}

TEST(renewal_rule)
{
    /* A 1-hour token: renewed 5 minutes before it expires, not earlier. */
    int64_t t0 = 1000000, hour = 3600 * 1000;
    ASSERT(!fcm_oauth_due(t0 + hour - 300001, t0, t0 + hour));
    ASSERT(fcm_oauth_due(t0 + hour - 299999, t0, t0 + hour));
    /* A 20-second token: after about 10 seconds. */
    ASSERT(!fcm_oauth_due(t0 + 9999, t0, t0 + 20000));
    ASSERT(fcm_oauth_due(t0 + 10001, t0, t0 + 20000));
    /* Never due right after it was obtained. */
    ASSERT(!fcm_oauth_due(t0, t0, t0 + 20000));
}

TEST_MAIN(T(assertion_verifies_with_public_key), T(service_account_errors_name_the_field),
          T(form_body), T(token_answer_parsed_leniently), T(renewal_rule))
