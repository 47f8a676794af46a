/* suites.h: one line per Check suite; test/check_main.c runs them all. */
#ifndef WD_TEST_SUITES_H
#define WD_TEST_SUITES_H

#include <check.h>

Suite *config_suite(void);
Suite *http1_suite(void);
Suite *cgienv_suite(void);
Suite *cgiresp_suite(void);
Suite *log_suite(void);
Suite *metrics_suite(void);
Suite *warmproto_suite(void);

#endif
