/* check_main.c: the single Check runner. Select with CK_RUN_SUITE / CK_RUN_CASE. */
#include <stdlib.h>
#include "suites.h"

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_add_suite(sr, http1_suite());
    srunner_add_suite(sr, cgienv_suite());
    srunner_add_suite(sr, cgiresp_suite());
    srunner_add_suite(sr, log_suite());
    srunner_add_suite(sr, metrics_suite());
    srunner_add_suite(sr, warmproto_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
